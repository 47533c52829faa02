"""Redis with Sentinel's invariants: every part answers, exactly one primary takes writes, the
sentinels agree and can act, replicas keep up, memory lasts, and no acknowledged write is lost.

The grace periods follow Sentinel's own clock. A dead primary is declared down after
`down-after-milliseconds` (3 s here), and an election and promotion take a few seconds more:
`no_writable_primary` waits 15 s, so a failover that works opens nothing. A restarted old
primary comes back as a primary until a sentinel's next look at it (its INFO every 10 s)
turns it into a replica: `split_brain` waits 15 s too, and a real split brain lasts longer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operator_ai.core import Invariant, Observation, Violation
from operator_ai.lab.load import ERROR_SHARE, lost_breach, workload_breach

MEMORY_SHARE = 0.9
LAG_BYTES = 1024 * 1024
LAG_SECONDS = 3
PROBE_SETTLE = 0.25

INVARIANTS = (
    Invariant("node_down", "every server and sentinel answers", "critical", 2.0),
    Invariant(
        "no_writable_primary",
        "the primary the sentinels name accepts a write",
        "critical",
        15.0,
    ),
    Invariant("split_brain", "exactly one server is a primary", "critical", 15.0),
    Invariant(
        "sentinels_disagree",
        "the sentinels name one primary, and a quorum of them can act",
        "warning",
        10.0,
    ),
    Invariant(
        "replica_unhealthy",
        f"each replica's link is up, within {LAG_BYTES // 1024} KiB and {LAG_SECONDS} s",
        "warning",
        10.0,
    ),
    Invariant(
        "memory_pressure",
        f"used memory stays under {MEMORY_SHARE:.0%} of maxmemory; no write is refused for it",
        "warning",
        5.0,
    ),
    Invariant("lost_writes", "no acknowledged write vanishes", "critical"),
    Invariant("workload_errors", f"client errors stay under {ERROR_SHARE:.0%}", "warning", 5.0),
)
SEVERITY = {i.name: i.severity for i in INVARIANTS}


def check(observation: Observation, history: Sequence[Observation]) -> list[Violation]:
    found: list[Violation] = []

    def violated(invariant: str, target: str, message: str, **evidence: Any) -> None:
        found.append(Violation("redis", invariant, target, message, SEVERITY[invariant], evidence))

    nodes, cluster = observation.nodes, observation.cluster
    servers = {name: n for name, n in nodes.items() if n["kind"] == "server"}
    sentinels = {name: n for name, n in nodes.items() if n["kind"] == "sentinel"}
    for name, node in sorted(nodes.items()):
        if not node["reachable"]:
            violated("node_down", name, f"{name} ({node['address']}) does not answer: "
                     f"{node['error']}", address=node["address"], error=node["error"])  # fmt: skip

    probe = cluster.get("probe")
    if probe is None:
        violated("no_writable_primary", "cluster", "no sentinel answers to name a primary",
                 named=cluster.get("named"))  # fmt: skip
    elif not probe["ok"]:
        violated("no_writable_primary", "cluster",
                 f"the sentinels name {probe['node']}, which refused a write: {probe['error']}",
                 primary=probe["node"], error=probe["error"])  # fmt: skip

    primaries = sorted(name for name, n in servers.items() if n.get("role") == "primary")
    if len(primaries) > 1:
        violated("split_brain", "cluster",
                 f"{len(primaries)} servers say they are the primary: {', '.join(primaries)}",
                 primaries=primaries, sentinels_name=cluster.get("primary"))  # fmt: skip

    named = cluster.get("named", [])
    stuck = {name: s["ckquorum"] for name, s in sentinels.items() if s["reachable"]
             and not s["quorum_ok"]}  # fmt: skip
    if len(named) > 1:
        violated("sentinels_disagree", "cluster",
                 f"the sentinels name {len(named)} different primaries: {', '.join(named)}",
                 named=named)  # fmt: skip
    elif stuck:
        violated("sentinels_disagree", "cluster",
                 f"{', '.join(sorted(stuck))} cannot reach a quorum to fail over: "
                 f"{next(iter(stuck.values()))}", ckquorum=stuck)  # fmt: skip

    primary = servers.get(cluster.get("primary") or "")
    for name, node in sorted(servers.items()):
        if node.get("role") != "replica":
            continue
        if node["master_link"] != "up":
            violated("replica_unhealthy", name,
                     f"{name}'s link to its primary {node['master']} is {node['master_link']}",
                     master=node["master"], link=node["master_link"],
                     last_io_seconds=node["master_last_io_seconds"])  # fmt: skip
            continue
        line = next((r for r in (primary or {}).get("replicas", [])
                     if r["address"] == node["address"]), None)  # fmt: skip
        if line is None or primary is None:
            continue
        behind = (primary["offset"] or 0) - (line["offset"] or 0)
        # A probe written a moment ago may not have reached a healthy replica yet.
        seconds = 0.0
        settled = observation.at.timestamp() - (primary["probe_at"] or 0) >= PROBE_SETTLE
        if settled and node["probe_at"]:
            seconds = primary["probe_at"] - node["probe_at"]
        if behind > LAG_BYTES or seconds > LAG_SECONDS:
            violated("replica_unhealthy", name,
                     f"{name} is {behind} bytes and {seconds:.1f} s behind the primary",
                     bytes_behind=behind, seconds_behind=round(seconds, 1))  # fmt: skip

    oom = probe is not None and not probe["ok"] and "OutOfMemoryError" in probe["error"]
    for name, node in sorted(servers.items()):
        used, limit = node.get("used_memory"), node.get("maxmemory")
        if limit and used and used > MEMORY_SHARE * limit:
            violated("memory_pressure", name,
                     f"{name} uses {used / limit:.0%} of its maxmemory ({limit} bytes, "
                     f"policy {node['maxmemory_policy']})", used_memory=used, maxmemory=limit,
                     policy=node["maxmemory_policy"])  # fmt: skip
        elif oom and probe is not None and probe["node"] == name:
            violated("memory_pressure", name, f"{name} refuses writes: {probe['error']}",
                     error=probe["error"])  # fmt: skip

    workload = cluster.get("workload") or {}
    if lost := lost_breach(workload, "writes vanished from every server"):
        message, evidence = lost
        violated("lost_writes", "workload", message, **evidence)
    if breach := workload_breach(workload):
        message, evidence = breach
        violated("workload_errors", "workload", message, **evidence)
    return found
