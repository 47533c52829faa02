"""The rate limiter's invariants: available, fast, and correct.

Correctness has two views. `counter_drift` compares each node's count for a key with what
Redis holds for the last window by its own clock. `over_admission` comes from the load
generator, Jepsen style: in some window a key was allowed more requests than its limit,
counting only requests sent and answered inside that window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from operator_ai.core import Invariant, Observation, Violation
from operator_ai.subjects.ratelimiter.declared import REDIS

LATENCY_P99_MS = 100.0
LATENCY_SPAN = timedelta(seconds=10)
LATENCY_MIN_CHECKS = 20
DRIFT_MIN = 3
DRIFT_SHARE = 0.2
RECENT_SECONDS = 10.0

INVARIANTS = (
    Invariant("node_down", "every node answers and heartbeats", "critical", 1.0),
    Invariant("redis_unreachable", "Redis answers the monitor and every node", "critical", 1.0),
    Invariant(
        "high_latency", f"each node's check p99 stays under {LATENCY_P99_MS:.0f} ms", "warning", 5.0
    ),
    Invariant("counter_drift", "each node's count for a key matches Redis's", "warning", 3.0),
    Invariant("over_admission", "no key is allowed beyond its limit in any window", "critical"),
    Invariant("limit_misconfigured", "each key's effective limit is the declared one", "warning"),
)
SEVERITY = {i.name: i.severity for i in INVARIANTS}


def check(observation: Observation, history: Sequence[Observation]) -> list[Violation]:
    found: list[Violation] = []

    def violated(invariant: str, target: str, message: str, **evidence: Any) -> None:
        found.append(
            Violation("ratelimiter", invariant, target, message, SEVERITY[invariant], evidence)
        )

    cluster = observation.cluster
    redis = observation.nodes[REDIS]
    nodes = {name: n for name, n in observation.nodes.items() if name != REDIS}
    registry = cluster.get("registry")
    if not redis["reachable"]:
        violated("redis_unreachable", REDIS, f"Redis at {redis['address']} does not answer: "
                 f"{redis.get('error')}", error=redis.get("error"))  # fmt: skip

    for name, node in sorted(nodes.items()):
        if not node["reachable"]:
            violated("node_down", name, f"{name} does not answer: {node.get('error')}",
                     address=node["address"], error=node.get("error"))  # fmt: skip
        elif not node.get("healthy"):
            if redis["reachable"]:
                violated("redis_unreachable", name, f"{name} cannot reach Redis: "
                         f"{node.get('redis')}", error=node.get("redis"))  # fmt: skip
        elif registry is not None and not registry.get(name, {}).get("alive"):
            violated("node_down", name, f"{name} answers but its heartbeat is missing from "
                     "the registry", registry=registry.get(name))  # fmt: skip
        p99 = latency_p99(name, observation, history)
        if p99 is not None and p99 > LATENCY_P99_MS:
            violated("high_latency", name, f"{name}'s check p99 is {p99:.0f} ms",
                     p99_ms=round(p99, 1))  # fmt: skip

    declared: dict[str, dict[str, int]] = cluster.get("declared", {})
    truth: dict[str, int] = cluster.get("truth", {})
    for key, limit in sorted(declared.items()):
        tolerance = max(DRIFT_MIN, DRIFT_SHARE * limit["limit"])
        if key in truth:
            drifting = {
                name: node["counts"][key]
                for name, node in nodes.items()
                if key in node.get("counts", {})
                and abs(node["counts"][key] - truth[key]) > tolerance
            }
            if drifting:
                views = ", ".join(f"{n} counts {c}" for n, c in sorted(drifting.items()))
                violated("counter_drift", key, f"{key}: Redis holds {truth[key]} in the last "
                         f"window, but {views}", truth=truth[key], counts=drifting)  # fmt: skip
        effective = (cluster.get("effective") or {}).get(key)
        if effective and (effective["limit"], effective["window_ms"]) != (
            limit["limit"],
            limit["window_ms"],
        ):
            violated("limit_misconfigured", key,
                     f"{key}'s effective limit is {effective['limit']} per "
                     f"{effective['window_ms']} ms ({effective.get('source')}), declared "
                     f"{limit['limit']} per {limit['window_ms']} ms",
                     effective=effective, declared=limit)  # fmt: skip

    workload = cluster.get("workload") or {}
    now = observation.at.timestamp()
    worst: dict[str, dict[str, Any]] = {}
    for over in workload.get("over_admissions", []):
        if (
            now - over["window_end"] <= RECENT_SECONDS
            and over["certain"] > worst.get(over["key"], {"certain": -1})["certain"]
        ):
            worst[over["key"]] = over
    for key, over in sorted(worst.items()):
        violated("over_admission", key, f"{key} was allowed {over['certain']} requests in one "
                 f"window, over its limit of {over['limit']}", **over)  # fmt: skip
    return found


def latency_p99(
    name: str, observation: Observation, history: Sequence[Observation]
) -> float | None:
    """The node's check p99 in ms over about the last ten seconds, from histogram deltas."""
    now = observation.nodes[name].get("buckets")
    if not now:
        return None
    since = observation.at - LATENCY_SPAN
    earlier = next(
        (o.nodes.get(name, {}).get("buckets") for o in history if o.at >= since
         and o.nodes.get(name, {}).get("buckets")),
        None,
    )  # fmt: skip
    if not earlier:
        return None
    deltas = sorted(
        ((float(le), count - earlier.get(le, 0.0)) for le, count in now.items()),
        key=lambda bucket: bucket[0],
    )
    total = deltas[-1][1] if deltas else 0.0
    if total < LATENCY_MIN_CHECKS:
        return None
    for bound, count in deltas:
        if count >= 0.99 * total:
            return bound * 1000
    return None
