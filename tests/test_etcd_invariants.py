"""etcd's invariants on observations built by hand: each fires on the state that should trip
it, and none fires on a healthy cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from operator_ai.core import Observation
from operator_ai.subjects.etcd.invariants import INVARIANTS, check

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def member(**overrides: Any) -> dict[str, Any]:
    seen = {
        "reachable": True, "address": "http://10.0.0.1:2379", "latency_ms": 3.0,
        "leader": "etcd1", "term": 2, "raft_index": 100, "db_size": 1 << 20, "quota": 64 << 20,
        "healthy": True,
    }  # fmt: skip
    return seen | overrides


def observation(
    at: datetime = T0, leader: str | None = "etcd1", **members: dict[str, Any]
) -> Observation:
    nodes = {name: member() for name in ("etcd1", "etcd2", "etcd3")} | members
    return Observation("etcd", at, nodes, {"leader": leader, "alarms": [], "members": []})


def keys(obs: Observation, history: list[Observation] | None = None) -> list[str]:
    return sorted(v.key for v in check(obs, history or []))


def test_a_healthy_cluster_breaks_nothing() -> None:
    assert keys(observation()) == []


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"etcd2": member(reachable=False, error="connection refused")}, "member_down:etcd2"),
        ({"etcd3": member(latency_ms=900.0)}, "member_slow:etcd3"),
        ({"etcd2": member(leader=None)}, "no_leader:etcd2"),
        ({"etcd2": member(term=3, leader="etcd2")}, "term_disagreement:cluster"),
        ({"etcd1": member(db_size=60 << 20)}, "db_near_quota:etcd1"),
        ({"etcd1": member(raft_index=5000)}, "raft_index_lag:etcd2"),
    ],
)
def test_each_member_invariant_fires(members: dict[str, dict[str, Any]], expected: str) -> None:
    assert f"etcd:{expected}" in keys(observation(**members))


def test_no_member_seeing_a_leader_is_a_cluster_problem() -> None:
    obs = observation(leader=None, **{n: member(leader=None) for n in ("etcd1", "etcd2", "etcd3")})
    assert keys(obs) == ["etcd:no_leader:cluster"]


def test_alarms_and_workload_errors() -> None:
    obs = observation()
    obs.cluster["alarms"] = [{"member": "etcd2", "alarm": "NOSPACE"}]
    obs.cluster["workload"] = {"window": {"seconds": 10, "ops": 100, "errors": 30}}
    assert keys(obs) == ["etcd:alarm_active:NOSPACE", "etcd:workload_errors:workload"]
    obs.cluster["workload"] = {"window": {"seconds": 10, "ops": 100, "errors": 1}}
    obs.cluster["alarms"] = []
    assert keys(obs) == []


def test_leader_flapping_counts_changes_within_the_window() -> None:
    leaders = ["etcd1", "etcd2", None, "etcd3", "etcd1"]
    history = [observation(T0 + timedelta(seconds=i), leader=x) for i, x in enumerate(leaders)]
    now = observation(T0 + timedelta(seconds=10))
    assert "etcd:leader_flapping:cluster" in keys(now, history)
    # The same changes, long ago, are history.
    later = observation(T0 + timedelta(seconds=120))
    assert keys(later, history) == []


def test_every_invariant_is_declared_with_a_valid_severity() -> None:
    assert {i.severity for i in INVARIANTS} <= {"critical", "warning", "info"}
    assert len({i.name for i in INVARIANTS}) == len(INVARIANTS) == 9
