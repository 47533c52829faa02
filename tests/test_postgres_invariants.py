"""PostgreSQL under Patroni's invariants on observations built by hand: each fires on the
state that should trip it, and none fires on a healthy cluster. The lab tests
(`test_postgres_lab.py`) show the same states arising from real faults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from operator_ai.core import Observation
from operator_ai.subjects.postgres.invariants import check

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024


def member(n: int, **overrides: Any) -> dict[str, Any]:
    primary = n == 1
    seen: dict[str, Any] = {
        "kind": "member", "address": f"10.0.0.1{n}:5432", "api": f"10.0.0.1{n}:8008",
        "patroni_ok": True, "state": "running", "timeline": 2, "postgres_ok": True,
        "in_recovery": not primary, "writable": primary, "max_connections": 40,
        "reserved_connections": 3, "connections": 5, "probe_at": 100.0, "wal_bytes": 8 * MIB,
        "data_bytes": 40 * MIB, "blocking": None, "refused_connections": False,
        "view": {"role": "leader" if primary else "replica", "timeline": 2},
    }  # fmt: skip
    if primary:
        seen["slots"] = [{"name": f"pg{i}", "type": "physical", "active": True,
                          "retained_bytes": 0} for i in (2, 3)]  # fmt: skip
        seen["senders"] = [{"name": f"pg{i}", "state": "streaming", "behind_bytes": 0}
                           for i in (2, 3)]  # fmt: skip
    else:
        seen["receiver"] = {"status": "streaming", "sender": "10.0.0.11:5432"}
    return seen | overrides


def etcd(n: int, **overrides: Any) -> dict[str, Any]:
    return {"kind": "dcs", "address": f"10.0.0.2{n}:2379", "reachable": True, "healthy": True,
            "error": None} | overrides  # fmt: skip


def observation(cluster: dict[str, Any] | None = None, **nodes: dict[str, Any]) -> Observation:
    seen = {f"pg{i}": member(i) for i in (1, 2, 3)} | {f"dcs{i}": etcd(i) for i in (1, 2, 3)}
    views = {"leader": "pg1", "dcs_view": True, "paused": False, "probe": {"node": "pg1",
             "ok": True}, "disk_bytes": 512 * MIB, "workload": None}  # fmt: skip
    return Observation("postgres", T0, seen | nodes, views | (cluster or {}))


def keys(obs: Observation) -> list[str]:
    return sorted(v.key for v in check(obs, []))


def test_a_healthy_cluster_breaks_nothing() -> None:
    assert keys(observation()) == []


def test_a_member_whose_patroni_or_postgres_is_gone_is_down() -> None:
    obs = observation(
        pg2=member(2, patroni_ok=False, patroni_error="ConnectError: refused"),
        pg3=member(3, state="starting"),
    )
    assert keys(obs) == ["postgres:member_down:pg2", "postgres:member_down:pg3"]


def test_no_lock_no_dcs_or_a_read_only_leader_is_no_primary() -> None:
    refused = {"node": "pg1", "ok": False, "error": "ReadOnlySqlTransaction"}
    for cluster in ({"leader": None, "probe": None}, {"dcs_view": False}, {"probe": refused}):
        found = keys(observation(cluster))
        assert "postgres:no_primary:cluster" in found, cluster
        # With no primary to follow, the replicas are not each a breach of their own.
        assert not any("replica_not_streaming" in k for k in found)


def test_two_writable_servers_are_multiple_primaries() -> None:
    obs = observation(pg3=member(3, in_recovery=False, writable=True, receiver=None))
    [violation] = [v for v in check(obs, []) if v.invariant == "multiple_primaries"]
    assert violation.evidence["writable"] == ["pg1", "pg3"] and "pg1's" in violation.message


def test_a_replica_off_the_timeline_or_not_streaming_from_the_primary() -> None:
    waiting = {"status": "streaming", "sender": "10.0.0.13:5432"}  # from a stray old primary
    obs = observation(pg2=member(2, view={"timeline": 1}, receiver=None),
                      pg3=member(3, receiver=waiting))  # fmt: skip
    assert keys(obs) == [
        "postgres:replica_not_streaming:pg2",
        "postgres:replica_not_streaming:pg3",
        "postgres:timeline_diverged:pg2",
    ]


def test_a_replica_behind_in_bytes_or_seconds_lags() -> None:
    primary = member(1, probe_at=100.0)
    primary["senders"][0]["behind_bytes"] = 20 * MIB
    obs = observation(pg1=primary, pg3=member(3, probe_at=85.0))
    assert keys(obs) == ["postgres:replication_lag:pg2", "postgres:replication_lag:pg3"]


def test_maintenance_mode_and_a_dcs_without_quorum() -> None:
    down = {"healthy": False, "error": "no leader"}
    obs = observation({"paused": True}, dcs1=etcd(1, **down), dcs2=etcd(2, reachable=False,
                      healthy=False, error="refused"))  # fmt: skip
    assert keys(obs) == ["postgres:cluster_paused:cluster", "postgres:dcs_unhealthy:dcs"]
    assert keys(observation(dcs1=etcd(1, **down))) == []  # two of three are a quorum


def test_a_slot_holding_wal_or_a_full_disk_is_wal_retention() -> None:
    primary = member(1)
    primary["slots"].append({"name": "barman", "type": "physical", "active": False,
                             "retained_bytes": 80 * MIB})  # fmt: skip
    obs = observation(pg1=primary, pg2=member(2, data_bytes=420 * MIB))
    assert keys(obs) == ["postgres:wal_retention:pg1", "postgres:wal_retention:pg2"]


def test_connections_near_the_limit_or_refused_are_exhausted() -> None:
    refused = {"postgres_ok": False, "refused_connections": True,
               "postgres_error": "OperationalError: sorry, too many clients already"}  # fmt: skip
    obs = observation(pg1=member(1, connections=34), pg2=member(2, **refused))
    assert keys(obs) == ["postgres:connections_exhausted:pg1", "postgres:connections_exhausted:pg2"]
    # 90% of the 37 slots open to the application (3 of 40 are the superusers') is 33.3.
    assert keys(observation(pg1=member(1, connections=33))) == []


def test_an_old_transaction_others_wait_on_is_a_long_transaction() -> None:
    blocking = {"pid": 42, "user": "postgres", "application": "report", "state": "idle in "
                "transaction", "age": 11.0, "query": "LOCK TABLE t", "waiting": 3}  # fmt: skip
    assert keys(observation(pg1=member(1, blocking=blocking))) == ["postgres:long_transaction:pg1"]
    young = blocking | {"age": 9.0}
    assert keys(observation(pg1=member(1, blocking=young))) == []


def test_lost_commits_and_client_errors_come_from_the_workload() -> None:
    workload = {"updated_at": 0, "window": {"ops": 100, "errors": 40},
                "last_error": "OperationalError: read-only",
                "writes": {"lost_recent": 3, "lost": 3, "lost_window": 60}}  # fmt: skip
    assert keys(observation({"workload": workload})) == [
        "postgres:lost_writes:workload",
        "postgres:workload_errors:workload",
    ]
