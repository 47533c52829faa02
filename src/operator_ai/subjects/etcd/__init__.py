"""etcd, the first subject: a Raft cluster, like TiKV's PD, that runs on this machine."""

from __future__ import annotations

import json
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
from operator_ai.subjects.etcd import invariants, load
from operator_ai.subjects.etcd.briefing import briefing, diagnostics
from operator_ai.subjects.etcd.faults import FAULTS
from operator_ai.subjects.etcd.observe import observe

QUOTA_BYTES = 64 * 1024 * 1024
"""Small on purpose: the NOSPACE fault fills it with about seventy 1 MiB values."""


class Etcd:
    name = "etcd"
    description = "etcd 3.x: a Raft key-value store (observed through its gateway and /metrics)"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3
    runtimes = (PROCESS,)

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        return {f"etcd{i}": {"client": 2379, "peer": 2380} for i in range(1, nodes + 1)}

    def node_commands(self, lab: LabState, lab_dir: Path) -> dict[str, list[str]]:
        cluster = ",".join(f"{n.name}={n.url('peer')}" for n in lab.nodes)
        commands = {}
        for node in lab.nodes:
            config = {
                "name": node.name,
                "data-dir": str(lab_dir / "data" / node.name),
                "listen-client-urls": node.url("client"),
                "advertise-client-urls": node.url("client"),
                "listen-peer-urls": node.url("peer"),
                "initial-advertise-peer-urls": node.url("peer"),
                "initial-cluster": cluster,
                "initial-cluster-state": "new",
                "initial-cluster-token": lab.prefix,
                "quota-backend-bytes": QUOTA_BYTES,
                "pre-vote": True,
                "enable-grpc-gateway": True,
                "heartbeat-interval": 100,
                "election-timeout": 1000,
                "logger": "zap",
                "log-outputs": ["stderr"],
            }
            # JSON is YAML, which is what --config-file reads.
            path = lab_dir / "conf" / f"{node.name}.yml"
            safefs.write_file(path, json.dumps(config, indent=2) + "\n")
            commands[node.name] = ["etcd", "--config-file", str(path)]
        return commands

    def observe(self, cluster: Cluster, timeout: float) -> Observation:
        return observe(cluster, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        leader = observation.cluster.get("leader")
        return str(leader) if leader else None

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


subject = Etcd()
