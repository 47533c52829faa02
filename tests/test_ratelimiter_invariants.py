"""The rate limiter's invariants on observations built by hand: each fires on the state
that should trip it, and none fires on a healthy lab."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from operator_ai.core import Observation
from operator_ai.subjects.ratelimiter.invariants import INVARIANTS, check

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DECLARED = {"user:alice": {"limit": 10, "window_ms": 1000}}
# Cumulative latency buckets (seconds): 1,000 checks, all under 5 ms.
FAST = {"0.005": 1000.0, "0.1": 1000.0, "0.25": 1000.0, "+Inf": 1000.0}


def node(**overrides: Any) -> dict[str, Any]:
    seen = {
        "reachable": True, "healthy": True, "redis": "ok", "address": "http://10.0.0.12:8080",
        "counts": {"user:alice": 9}, "buckets": FAST, "checks": {},
    }  # fmt: skip
    return seen | overrides


def observation(
    at: datetime = T0, cluster: dict[str, Any] | None = None, **nodes: Any
) -> Observation:
    seen = {name: node() for name in ("rl1", "rl2", "rl3")} | nodes
    seen.setdefault("redis", {"reachable": True, "address": "10.0.0.11:6379"})
    registry = {name: {"node": name, "alive": True} for name in ("rl1", "rl2", "rl3")}
    base = {
        "registry": registry, "declared": DECLARED, "truth": {"user:alice": 9},
        "effective": {"user:alice": {"limit": 10, "window_ms": 1000, "source": "declared"}},
        "workload": None,
    }  # fmt: skip
    return Observation("ratelimiter", at, seen, base | (cluster or {}))


def keys(obs: Observation, history: list[Observation] | None = None) -> list[str]:
    return sorted(v.key.removeprefix("ratelimiter:") for v in check(obs, history or []))


def test_a_healthy_lab_breaks_nothing() -> None:
    earlier = observation(T0 - timedelta(seconds=5))
    assert keys(observation(), [earlier]) == []


def test_a_node_that_does_not_answer_or_heartbeat_is_down() -> None:
    assert keys(observation(rl2=node(reachable=False, error="connection refused"))) == [
        "node_down:rl2"
    ]
    registry = {"rl1": {"alive": True}, "rl2": {"alive": True}, "rl3": {"alive": False}}
    assert keys(observation(cluster={"registry": registry})) == ["node_down:rl3"]


def test_redis_unreachable_names_redis_or_the_node_that_cannot_reach_it() -> None:
    gone = {"reachable": False, "address": "10.0.0.11:6379", "error": "timed out"}
    lost = node(healthy=False, redis="timed out", counts={})
    assert keys(observation(redis=gone, rl1=lost, rl2=lost, rl3=lost)) == [
        "redis_unreachable:redis"
    ]
    assert keys(observation(rl3=lost)) == ["redis_unreachable:rl3"]


def test_a_slow_node_has_high_latency_from_its_histogram() -> None:
    slow = {"0.005": 1000.0, "0.1": 1010.0, "0.25": 1500.0, "+Inf": 1500.0}
    earlier = observation(T0 - timedelta(seconds=5))
    assert keys(observation(rl2=node(buckets=slow)), [earlier]) == ["high_latency:rl2"]
    assert keys(observation(rl2=node(buckets=slow)), []) == []  # no history: no rate yet


def test_a_node_whose_count_differs_from_redis_drifts() -> None:
    assert keys(observation(rl1=node(counts={"user:alice": 40}))) == ["counter_drift:user:alice"]
    assert keys(observation(rl1=node(counts={"user:alice": 11}))) == []  # within tolerance


def test_an_overridden_limit_is_misconfigured() -> None:
    wrong = {"user:alice": {"limit": 100, "window_ms": 1000, "source": "override"}}
    assert keys(observation(cluster={"effective": wrong})) == ["limit_misconfigured:user:alice"]


def test_over_admission_comes_from_recent_load_windows() -> None:
    end = T0.timestamp() - 2
    over = {"key": "user:alice", "window_start": end - 1, "window_end": end,
            "allowed": 13, "certain": 12, "limit": 10}  # fmt: skip
    workload = {"over_admissions": [over]}
    found = check(observation(cluster={"workload": workload}), [])
    assert [v.key for v in found] == ["ratelimiter:over_admission:user:alice"]
    assert found[0].evidence["certain"] == 12
    stale = {"over_admissions": [over | {"window_end": end - 60}]}
    assert keys(observation(cluster={"workload": stale})) == []


def test_every_invariant_is_covered() -> None:
    assert {i.name for i in INVARIANTS} == {
        "node_down", "redis_unreachable", "high_latency", "counter_drift", "over_admission",
        "limit_misconfigured",
    }  # fmt: skip
