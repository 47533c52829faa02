"""Redis with Sentinel's invariants on observations built by hand: each fires on the state
that should trip it, and none fires on a healthy cluster. The lab tests
(`test_redis_lab.py`) show the same states arising from real faults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from operator_ai.core import Observation
from operator_ai.subjects.redis.invariants import check

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PRIMARY = "10.0.0.11:6379"


def server(n: int, **overrides: Any) -> dict[str, Any]:
    address = f"10.0.0.1{n}:6379"
    replica = {"role": "replica", "master": PRIMARY, "master_link": "up",
               "master_last_io_seconds": 0, "replica_offset": 1000}  # fmt: skip
    primary = {"role": "primary", "master": None, "master_link": None,
               "replicas": [{"address": f"10.0.0.1{i}:6379", "state": "online", "offset": 1000,
                             "lag": 0} for i in (2, 3)]}  # fmt: skip
    seen = {"kind": "server", "address": address, "reachable": True, "offset": 1000,
            "replicas": [], "probe_at": 100.0, "used_memory": 1 << 20, "maxmemory": 128 << 20,
            "maxmemory_policy": "noeviction"}  # fmt: skip
    return seen | (primary if address == PRIMARY else replica) | overrides


def sentinel(n: int, **overrides: Any) -> dict[str, Any]:
    seen = {"kind": "sentinel", "address": f"10.0.0.1{n}:26379", "reachable": True,
            "names": PRIMARY, "config_epoch": 0, "ckquorum": "OK 3 usable Sentinels",
            "quorum_ok": True}  # fmt: skip
    return seen | overrides


def observation(cluster: dict[str, Any] | None = None, **nodes: dict[str, Any]) -> Observation:
    seen = {f"redis{i}": server(i) for i in (1, 2, 3)} | {
        f"sentinel{i}": sentinel(i) for i in (1, 2, 3)
    }
    views = {"primary": "redis1", "named": [PRIMARY], "probe": {"node": "redis1", "ok": True},
             "workload": None}  # fmt: skip
    return Observation("redis", T0, seen | nodes, views | (cluster or {}))


def keys(obs: Observation) -> list[str]:
    return sorted(v.key for v in check(obs, []))


def test_a_healthy_cluster_breaks_nothing() -> None:
    assert keys(observation()) == []


def test_a_silent_server_or_sentinel_is_down() -> None:
    down = {"reachable": False, "error": "ConnectionError: refused"}
    obs = observation(redis2=server(2) | down, sentinel3=sentinel(3) | down)
    assert keys(obs) == ["redis:node_down:redis2", "redis:node_down:sentinel3"]


def test_a_primary_that_refuses_the_probe_or_none_named_is_no_writable_primary() -> None:
    refused = {"node": "redis1", "ok": False, "error": "ConnectionError: refused"}
    assert keys(observation({"probe": refused})) == ["redis:no_writable_primary:cluster"]
    assert keys(observation({"probe": None})) == ["redis:no_writable_primary:cluster"]


def test_two_primaries_are_a_split_brain_and_two_names_a_disagreement() -> None:
    obs = observation(
        {"named": [PRIMARY, "10.0.0.12:6379"]},
        redis2=server(2, role="primary", master=None, master_link=None),
    )
    assert keys(obs) == ["redis:sentinels_disagree:cluster", "redis:split_brain:cluster"]


def test_a_sentinel_without_quorum_is_a_disagreement() -> None:
    stuck = sentinel(2, quorum_ok=False, ckquorum="NOQUORUM 1 usable Sentinels")
    [violation] = check(observation(sentinel2=stuck), [])
    assert violation.key == "redis:sentinels_disagree:cluster"
    assert "NOQUORUM" in violation.message


def test_a_replica_down_link_or_far_behind_is_unhealthy() -> None:
    assert keys(observation(redis2=server(2, master_link="down"))) == [
        "redis:replica_unhealthy:redis2"
    ]
    # The probe the primary holds is 5 s newer than the replica's copy.
    [behind] = check(observation(redis3=server(3, probe_at=95.0)), [])
    assert behind.key == "redis:replica_unhealthy:redis3"
    assert behind.evidence["seconds_behind"] == 5.0
    lagging = server(1)
    lagging["replicas"][0]["offset"] = 1000 - 2 * 1024 * 1024
    assert keys(observation(redis1=lagging)) == ["redis:replica_unhealthy:redis2"]


def test_memory_near_maxmemory_or_a_refused_write_is_pressure() -> None:
    full = server(2, used_memory=120 << 20)
    assert keys(observation(redis2=full)) == ["redis:memory_pressure:redis2"]
    refused = "OutOfMemoryError: command not allowed when used memory > 'maxmemory'."
    oom = {"node": "redis1", "ok": False, "error": refused}
    assert keys(observation({"probe": oom})) == [
        "redis:memory_pressure:redis1",
        "redis:no_writable_primary:cluster",
    ]


def test_lost_writes_and_client_errors_come_from_the_load() -> None:
    workload = {
        "window": {"seconds": 10, "ops": 500, "errors": 100},
        "last_error": "MasterNotFoundError: No master found for 'lab'",
        "writes": {"lost": 40, "lost_recent": 12, "lost_window": 60, "lost_examples": []},
    }
    violations = {v.key: v for v in check(observation({"workload": workload}), [])}
    assert sorted(violations) == ["redis:lost_writes:workload", "redis:workload_errors:workload"]
    assert violations["redis:lost_writes:workload"].evidence["lost_recent"] == 12
    quiet = workload | {"window": {"seconds": 10, "ops": 500, "errors": 0}}
    quiet["writes"] = quiet["writes"] | {"lost_recent": 0}
    assert keys(observation({"workload": quiet})) == []
