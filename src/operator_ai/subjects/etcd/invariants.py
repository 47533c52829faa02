"""etcd's invariants, checked on one observation (and, for flapping, the ones before it)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from operator_ai.core import Invariant, Observation, Violation
from operator_ai.lab.load import ERROR_SHARE, workload_breach

SLOW_MS = 250.0
QUOTA_SHARE = 0.8
INDEX_LAG = 500
FLAP_CHANGES = 3
FLAP_WINDOW = timedelta(seconds=60)

INVARIANTS = (
    Invariant("member_down", "every member answers", "critical", 1.0),
    Invariant("member_slow", f"every member answers within {SLOW_MS:.0f} ms", "warning", 3.0),
    Invariant("no_leader", "the cluster, and every member, sees a leader", "critical", 3.0),
    Invariant("term_disagreement", "members agree on the term and the leader", "warning", 5.0),
    Invariant("alarm_active", "no alarm (NOSPACE, CORRUPT) is raised", "critical", 0.0),
    Invariant(
        "db_near_quota", f"each DB stays under {QUOTA_SHARE:.0%} of its quota", "warning", 0.0
    ),
    Invariant("raft_index_lag", f"no member is {INDEX_LAG} entries behind", "warning", 5.0),
    Invariant("leader_flapping", f"under {FLAP_CHANGES} leader changes a minute", "warning", 0.0),
    Invariant("workload_errors", f"client errors stay under {ERROR_SHARE:.0%}", "warning", 5.0),
)
SEVERITY = {i.name: i.severity for i in INVARIANTS}


def check(observation: Observation, history: Sequence[Observation]) -> list[Violation]:
    found: list[Violation] = []

    def violated(invariant: str, target: str, message: str, **evidence: Any) -> None:
        found.append(Violation("etcd", invariant, target, message, SEVERITY[invariant], evidence))

    members = observation.nodes
    up = {name: m for name, m in members.items() if m["reachable"]}
    for name, m in members.items():
        if not m["reachable"]:
            violated("member_down", name, f"{name} does not answer: {m.get('error')}",
                     address=m["address"], error=m.get("error"))  # fmt: skip
    for name, m in up.items():
        if m.get("latency_ms", 0) > SLOW_MS:
            violated("member_slow", name, f"{name} took {m['latency_ms']:.0f} ms to answer",
                     latency_ms=m["latency_ms"])  # fmt: skip
        if m.get("quota") and m.get("db_size", 0) >= QUOTA_SHARE * m["quota"]:
            share = m["db_size"] / m["quota"]
            violated("db_near_quota", name, f"{name}'s DB is at {share:.0%} of its quota",
                     db_size=m["db_size"], quota=m["quota"])  # fmt: skip

    with_leader = {name: m for name, m in up.items() if m.get("leader")}
    if not with_leader:
        violated("no_leader", "cluster", "no member sees a leader",
                 answering=sorted(up))  # fmt: skip
    else:
        for name in sorted(set(up) - set(with_leader)):
            violated("no_leader", name, f"{name} sees no leader while others do",
                     term=up[name].get("term"))  # fmt: skip
        views = {(m["term"], m["leader"]) for m in with_leader.values()}
        if len(views) > 1:
            detail = {
                name: {"term": m["term"], "leader": m["leader"]} for name, m in with_leader.items()
            }
            violated("term_disagreement", "cluster", "members disagree on term or leader",
                     views=detail)  # fmt: skip

    if up:
        top = max(m.get("raft_index", 0) for m in up.values())
        for name, m in up.items():
            lag = top - m.get("raft_index", 0)
            if lag > INDEX_LAG:
                violated("raft_index_lag", name, f"{name} is {lag} raft entries behind",
                         lag=lag, raft_index=m.get("raft_index"))  # fmt: skip

    for alarm in observation.cluster.get("alarms", []):
        kind = str(alarm.get("alarm", "UNKNOWN"))
        violated("alarm_active", kind, f"{kind} alarm raised by {alarm.get('member')}",
                 member=alarm.get("member"))  # fmt: skip

    changes = leader_changes(observation, history)
    if changes >= FLAP_CHANGES:
        violated("leader_flapping", "cluster",
                 f"the leader changed {changes} times in {FLAP_WINDOW.seconds} s",
                 changes=changes)  # fmt: skip

    if breach := workload_breach(observation.cluster.get("workload")):
        message, evidence = breach
        violated("workload_errors", "workload", message, **evidence)
    return found


def leader_changes(observation: Observation, history: Sequence[Observation]) -> int:
    """How often the leader moved within the flapping window, as this monitor saw it."""
    since = observation.at - FLAP_WINDOW
    leaders = [o.cluster.get("leader") for o in [*history, observation] if o.at >= since]
    seen = [leader for leader in leaders if leader]
    return sum(1 for before, after in itertools.pairwise(seen) if before != after)
