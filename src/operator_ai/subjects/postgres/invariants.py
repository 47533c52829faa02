"""PostgreSQL under Patroni's invariants: every member runs, exactly one PostgreSQL takes
writes and it holds the leader lock, replicas stream and keep up on the primary's timeline,
the DCS has a quorum, nobody left maintenance mode on, WAL and connections last, no
transaction holds others up for long, and no acknowledged commit is lost.

The grace periods follow Patroni's clock: the leader lock lapses `ttl` (10 s) after a dead
primary last renewed it, and a replica takes it within a `loop_wait` (2 s) or two, so
`no_primary` waits 20 s and a failover that works opens only `member_down`. A rejoining old
primary rewinds and starts streaming within seconds; a member still off the primary's
timeline after 30 s cannot follow it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operator_ai.core import Invariant, Observation, Violation
from operator_ai.lab.load import ERROR_SHARE, lost_breach, workload_breach

LAG_BYTES = 16 * 1024 * 1024
LAG_SECONDS = 10.0
PROBE_SETTLE = 1.0
SLOT_BYTES = 64 * 1024 * 1024
DISK_SHARE = 0.8
CONNECTION_SHARE = 0.9
TRANSACTION_SECONDS = 10.0

INVARIANTS = (
    Invariant(
        "member_down", "every member's Patroni and PostgreSQL run and answer", "critical", 5.0
    ),
    Invariant(
        "no_primary",
        "a member holds the leader lock and its PostgreSQL takes writes",
        "critical",
        20.0,
    ),
    Invariant("multiple_primaries", "exactly one PostgreSQL accepts writes", "critical", 5.0),
    Invariant(
        "replica_not_streaming", "each replica streams WAL from the primary", "warning", 15.0
    ),
    Invariant(
        "replication_lag",
        f"each replica within {LAG_BYTES // 2**20} MiB and {LAG_SECONDS:.0f} s of the primary",
        "warning",
        15.0,
    ),
    Invariant("timeline_diverged", "each member follows the primary's timeline", "critical", 30.0),
    Invariant("cluster_paused", "maintenance mode is off: Patroni may fail over", "warning", 5.0),
    Invariant(
        "dcs_unhealthy",
        "a quorum of the DCS's etcd members is healthy and Patroni reaches it",
        "critical",
        5.0,
    ),
    Invariant(
        "wal_retention",
        f"no slot holds back over {SLOT_BYTES // 2**20} MiB of WAL; the data disk stays "
        f"under {DISK_SHARE:.0%}",
        "warning",
        5.0,
    ),
    Invariant(
        "connections_exhausted",
        f"connections stay under {CONNECTION_SHARE:.0%} of those open to non-superusers; none "
        "refused",
        "warning",
        5.0,
    ),
    Invariant(
        "long_transaction",
        f"no transaction older than {TRANSACTION_SECONDS:.0f} s holds locks others wait on",
        "warning",
    ),
    Invariant("lost_writes", "no acknowledged commit vanishes", "critical"),
    Invariant("workload_errors", f"client errors stay under {ERROR_SHARE:.0%}", "warning", 5.0),
)
SEVERITY = {i.name: i.severity for i in INVARIANTS}


def check(observation: Observation, history: Sequence[Observation]) -> list[Violation]:
    found: list[Violation] = []

    def violated(invariant: str, target: str, message: str, **evidence: Any) -> None:
        found.append(
            Violation("postgres", invariant, target, message, SEVERITY[invariant], evidence)
        )

    nodes, cluster = observation.nodes, observation.cluster
    pg = {name: n for name, n in nodes.items() if n["kind"] == "member"}
    etcd = {name: n for name, n in nodes.items() if n["kind"] == "dcs"}
    leader = cluster.get("leader")

    for name, node in sorted(pg.items()):
        if not node["patroni_ok"]:
            violated("member_down", name, f"{name}'s Patroni ({node['api']}) does not answer: "
                     f"{node['patroni_error']}", error=node["patroni_error"])  # fmt: skip
        elif node["state"] != "running":
            violated("member_down", name, f"{name}'s Patroni says its PostgreSQL is "
                     f"{node['state']!r}", state=node["state"])  # fmt: skip
        elif not node["postgres_ok"] and not node["refused_connections"]:
            violated("member_down", name, f"{name}'s PostgreSQL ({node['address']}) does not "
                     f"answer: {node['postgres_error']}", error=node["postgres_error"])  # fmt: skip

    probe = cluster.get("probe")
    if not cluster.get("dcs_view"):
        violated("no_primary", "cluster", "no member can read the cluster from the DCS, so none "
                 "can hold the leader lock")  # fmt: skip
    elif leader is None:
        violated("no_primary", "cluster", "no member holds the leader lock")
    elif probe is not None and not probe["ok"]:
        violated("no_primary", "cluster", f"{leader} holds the leader lock but refused a write: "
                 f"{probe['error']}", leader=leader, error=probe["error"])  # fmt: skip

    writable = sorted(name for name, n in pg.items() if n.get("writable"))
    if len(writable) > 1:
        violated("multiple_primaries", "cluster",
                 f"{len(writable)} PostgreSQL servers accept writes: {', '.join(writable)} "
                 f"(the leader lock is {leader or 'nobody'}'s)", writable=writable,
                 leader=leader)  # fmt: skip

    primary = pg.get(leader or "")
    senders = {s["name"]: s for s in (primary or {}).get("senders", [])}
    # With no primary to follow, that is the breach (no_primary), not each replica.
    following = primary is not None and primary.get("postgres_ok") and primary.get("writable")
    for name, node in sorted(pg.items()) if following else ():
        assert primary is not None
        if name == leader or not node.get("postgres_ok") or not node.get("in_recovery"):
            continue
        timeline = (node.get("view") or {}).get("timeline")
        receiver: dict[str, Any] = node.get("receiver") or {}
        if timeline and primary.get("timeline") and timeline != primary["timeline"]:
            violated("timeline_diverged", name,
                     f"{name} is on timeline {timeline}, the primary {leader} on "
                     f"{primary['timeline']}", timeline=timeline,
                     primary_timeline=primary["timeline"])  # fmt: skip
        if receiver.get("status") != "streaming" or receiver["sender"] != primary["address"]:
            state = f"{receiver['status']} from {receiver['sender']}" if receiver else "none"
            violated("replica_not_streaming", name, f"{name} is not streaming from the "
                     f"primary {leader} at {primary['address']} (its WAL receiver: {state})",
                     receiver=receiver or None)  # fmt: skip
            continue
        behind = (senders.get(name) or {}).get("behind_bytes") or 0
        seconds = 0.0
        settled = observation.at.timestamp() - (primary.get("probe_at") or 0) >= PROBE_SETTLE
        if settled and node.get("probe_at") and primary.get("probe_at"):
            seconds = primary["probe_at"] - node["probe_at"]
        if behind > LAG_BYTES or seconds > LAG_SECONDS:
            violated("replication_lag", name,
                     f"{name} replays {behind} bytes and {seconds:.1f} s behind the primary",
                     bytes_behind=behind, seconds_behind=round(seconds, 1))  # fmt: skip

    if cluster.get("paused"):
        violated("cluster_paused", "cluster", "the cluster is in maintenance mode (paused): "
                 "Patroni will not fail over or restart anything")  # fmt: skip

    healthy = sorted(name for name, n in etcd.items() if n["healthy"])
    if etcd and len(healthy) <= len(etcd) // 2:
        sick = {name: n["error"] for name, n in etcd.items() if not n["healthy"]}
        violated("dcs_unhealthy", "dcs", f"only {len(healthy)} of {len(etcd)} etcd members are "
                 f"healthy: no quorum", healthy=healthy, errors=sick)  # fmt: skip
    elif pg and not cluster.get("dcs_view"):
        violated("dcs_unhealthy", "dcs", "no Patroni member can read the cluster from the DCS")

    disk = cluster.get("disk_bytes")
    for name, node in sorted(pg.items()):
        for slot in node.get("slots", []):
            if slot["retained_bytes"] > SLOT_BYTES:
                violated("wal_retention", name,
                         f"slot {slot['name']!r} on {name} (active: {slot['active']}) holds back"
                         f" {slot['retained_bytes'] // 2**20} MiB of WAL",
                         slot=slot["name"], active=slot["active"],
                         retained_bytes=slot["retained_bytes"])  # fmt: skip
                break
        else:
            if disk and node.get("data_bytes", 0) > DISK_SHARE * disk:
                violated("wal_retention", name,
                         f"{name}'s data uses {node['data_bytes'] / disk:.0%} of its disk",
                         data_bytes=node["data_bytes"], wal_bytes=node["wal_bytes"],
                         disk_bytes=disk)  # fmt: skip

        # The application is refused once only the superusers' reserved slots are left.
        limit = (node.get("max_connections") or 0) - (node.get("reserved_connections") or 0)
        if node.get("refused_connections"):
            violated("connections_exhausted", name, f"{name} refuses new connections: "
                     f"{node['postgres_error']}", error=node["postgres_error"])  # fmt: skip
        elif limit > 0 and node["connections"] > CONNECTION_SHARE * limit:
            violated("connections_exhausted", name,
                     f"{name} has {node['connections']} connections open; max_connections is "
                     f"{node['max_connections']}, {node['reserved_connections']} of them kept "
                     "for superusers",
                     connections=node["connections"], limit=limit)  # fmt: skip

        blocking = node.get("blocking")
        if blocking and blocking["age"] > TRANSACTION_SECONDS:
            violated("long_transaction", name,
                     f"on {name}, PID {blocking['pid']} ({blocking['user']}, "
                     f"{blocking['application'] or 'no application name'}) has held a "
                     f"transaction open {blocking['age']:.0f} s; {blocking['waiting']} sessions "
                     f"wait on its locks", **blocking)  # fmt: skip

    workload = cluster.get("workload") or {}
    if lost := lost_breach(workload, "commits vanished from the primary"):
        message, evidence = lost
        violated("lost_writes", "workload", message, **evidence)
    if breach := workload_breach(workload):
        message, evidence = breach
        violated("workload_errors", "workload", message, **evidence)
    return found
