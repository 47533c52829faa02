"""Redis with Sentinel: one primary, its replicas, and a sentinel beside each server, the way
they are deployed together. Failover is Sentinel's; what the monitor adds is noticing when it
loses data (a partitioned primary that kept taking writes) or cannot happen at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from operator_ai.core import (
    PROCESS,
    Cluster,
    Fault,
    Invariant,
    Observation,
    Report,
    Stopping,
    Violation,
)
from operator_ai.lab import safefs
from operator_ai.lab.state import LabState
from operator_ai.subjects.redis import invariants, load
from operator_ai.subjects.redis.briefing import briefing, diagnostics
from operator_ai.subjects.redis.faults import FAULTS
from operator_ai.subjects.redis.nodes import (
    MASTER,
    SENTINEL,
    SENTINEL_PORT,
    SERVER,
    SERVER_PORT,
    quorum,
    sentinel_of,
)
from operator_ai.subjects.redis.observe import observe

MAXMEMORY = "128mb"
DOWN_AFTER_MS = 3000
"""Short for a lab, not shorter: Sentinel enters TILT mode (and stops acting) when its timer
stalls for 2 s, which a loaded 2-core machine can do; 3 s leaves room for that."""
FAILOVER_TIMEOUT_MS = 15000


class Redis:
    name = "redis"
    description = "Redis 7 with Sentinel: a primary, its replicas, a sentinel beside each server"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3
    runtimes = (PROCESS,)

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        count = range(1, nodes + 1)
        return {f"{SERVER}{i}": {SERVER: SERVER_PORT} for i in count} | {
            f"{SENTINEL}{i}": {SENTINEL: SENTINEL_PORT} for i in count
        }

    def colocated(self, nodes: int) -> dict[str, str]:
        return {sentinel_of(f"{SERVER}{i}"): f"{SERVER}{i}" for i in range(1, nodes + 1)}

    def node_commands(self, lab: LabState, lab_dir: Path) -> dict[str, list[str]]:
        servers = [n for n in lab.nodes if SERVER in n.ports]
        sentinels = [n for n in lab.nodes if SENTINEL in n.ports]
        primary = servers[0]
        where = f"{primary.address} {primary.ports[SERVER]}"
        commands = {}
        for node in servers:
            replica = f"replicaof {where}\n" if node is not primary else ""
            path = lab_dir / "conf" / f"{node.name}.conf"
            safefs.write_file(path, f"""\
# Written by `operator lab up`. Yours to change; CONFIG REWRITE and Sentinel change it too.
bind {node.address}
port {node.ports[SERVER]}
protected-mode no
dir {lab_dir / "data" / node.name}
logfile ""
save ""
appendonly yes
appendfsync everysec
repl-diskless-sync yes
repl-diskless-sync-delay 0
repl-timeout 10
repl-ping-replica-period 1
maxmemory {MAXMEMORY}
maxmemory-policy noeviction
{replica}""")  # fmt: skip
            commands[node.name] = ["redis-server", str(path)]
        for node in sentinels:
            # Sentinel rewrites its own file (what it learns, its id), in a directory it can
            # write: conf/ is the lab user's.
            path = lab_dir / "conf" / f"{node.name}.conf"
            safefs.write_file(path, f"""\
# Written by `operator lab up`. Yours to change; Sentinel rewrites it as it learns.
bind {node.address}
port {node.ports[SENTINEL]}
protected-mode no
dir {lab_dir / "data" / node.name}
logfile ""
sentinel monitor {MASTER} {where} {quorum(len(sentinels))}
sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}
sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}
sentinel parallel-syncs {MASTER} {len(servers)}
""")  # fmt: skip
            commands[node.name] = ["redis-sentinel", str(path)]
        return commands

    def observe(self, cluster: Cluster, timeout: float) -> Observation:
        return observe(cluster, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        primary = observation.cluster.get("primary")
        return str(primary) if primary else None

    def faults(self) -> Mapping[str, Fault]:
        return FAULTS

    def load(
        self,
        cluster: Cluster,
        rate: float,
        duration: float | None,
        report: Report,
        stop: Stopping,
    ) -> None:
        load.run(cluster, rate, duration, report, stop)

    def briefing(self, cluster: Cluster) -> str:
        return briefing(cluster)

    def diagnostics(self, cluster: Cluster, targets: Sequence[str]) -> list[str]:
        return diagnostics(cluster, targets)


subject = Redis()
