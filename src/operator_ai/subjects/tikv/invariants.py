"""TiKV's invariants, checked on one observation of PD and Prometheus."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operator_ai.core import Invariant, Observation, Violation

P99_MS = 500.0
DISK_FREE_SHARE = 0.2
IMBALANCE_SHARE = 0.5
IMBALANCE_MIN_LEADERS = 6

INVARIANTS = (
    Invariant("store_down", "every store is Up in PD", "critical", 0.0),
    Invariant("pd_member_unhealthy", "every PD member is healthy", "critical", 3.0),
    Invariant("no_pd_leader", "PD has a leader", "critical", 3.0),
    Invariant(
        "high_latency", f"each store's p99 gRPC latency is under {P99_MS:.0f} ms", "warning", 10.0
    ),
    Invariant(
        "low_disk_space", f"each store keeps {DISK_FREE_SHARE:.0%} of its disk free", "warning", 0.0
    ),
    Invariant("region_unhealthy", "no region misses a peer or has a down peer", "warning", 10.0),
    Invariant(
        "leader_imbalance",
        f"no store's leader count is off the mean by over {IMBALANCE_SHARE:.0%}",
        "warning",
        60.0,
    ),
)
SEVERITY = {i.name: i.severity for i in INVARIANTS}


def check(observation: Observation, history: Sequence[Observation]) -> list[Violation]:
    found: list[Violation] = []

    def violated(invariant: str, target: str, message: str, **evidence: Any) -> None:
        if observation.saw(invariant, target):
            found.append(
                Violation("tikv", invariant, target, message, SEVERITY[invariant], evidence)
            )

    pds = {n: s for n, s in observation.nodes.items() if s["role"] == "pd"}
    stores = {n: s for n, s in observation.nodes.items() if s["role"] == "tikv"}
    errors = observation.cluster.get("errors", {})

    if "prometheus" in errors:  # the metric invariants are blind, and their tickets stay
        found.append(
            Violation(
                "tikv",
                "subject_unobservable",
                "prometheus",
                f"Prometheus did not answer: {errors['prometheus']}",
                "critical",
            )
        )
    for name, pd in sorted(pds.items()):
        if pd.get("healthy") is False or ("healthy" not in pd and "error" in pd):
            violated(
                "pd_member_unhealthy",
                name,
                f"PD member {name} is unhealthy: {pd.get('error', 'PD health says so')}",
                address=pd.get("address"),
            )
    if not observation.cluster.get("leader"):
        violated(
            "no_pd_leader",
            "cluster",
            f"PD has no leader: {errors.get('members', 'the member list names none')}",
        )

    for name, store in sorted(stores.items()):
        if store["state"] != "Up":
            which = f"store {store['store_id']} ({name})" if store["store_id"] else name
            violated(
                "store_down",
                name,
                f"{which} is {store['state']} in PD",
                store_id=store["store_id"],
                state=store["state"],
                last_heartbeat=store.get("last_heartbeat"),
            )
            continue
        p99 = store.get("p99_ms")
        if p99 is not None and p99 > P99_MS:
            violated(
                "high_latency",
                name,
                f"{name}'s p99 gRPC latency is {p99:.0f} ms",
                p99_ms=p99,
                qps=store.get("qps"),
            )
        capacity, available = store.get("capacity"), store.get("available")
        if capacity and available is not None and available < DISK_FREE_SHARE * capacity:
            violated(
                "low_disk_space",
                name,
                f"{name} has {available / capacity:.0%} of its disk free",
                capacity=capacity,
                available=available,
            )

    regions = observation.cluster.get("regions", {})
    unhealthy = regions.get("miss_peer", 0) + regions.get("down_peer", 0)
    if unhealthy:
        violated(
            "region_unhealthy",
            "cluster",
            f"{regions.get('miss_peer', 0)} regions miss a peer and "
            f"{regions.get('down_peer', 0)} have a down peer",
            **regions,
        )

    up = {n: s["leader_count"] for n, s in stores.items() if s["state"] == "Up"}
    total = sum(up.values())
    if len(up) > 1 and total >= IMBALANCE_MIN_LEADERS:
        mean = total / len(up)
        for name, count in sorted(up.items()):
            if abs(count - mean) > IMBALANCE_SHARE * mean:
                violated(
                    "leader_imbalance",
                    name,
                    f"{name} leads {count} regions against a mean of {mean:.1f}",
                    leader_count=count,
                    mean=round(mean, 1),
                    counts=up,
                )
    return found
