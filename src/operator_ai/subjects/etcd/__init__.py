"""etcd, the first subject: a Raft cluster, like TiKV's PD, that runs on this machine."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operator_ai.lab import safefs
from operator_ai.lab.state import LabState
from operator_ai.store.records import Violation
from operator_ai.subjects import Invariant, Observation
from operator_ai.subjects.etcd import invariants, load
from operator_ai.subjects.etcd.briefing import briefing
from operator_ai.subjects.etcd.observe import observe

if TYPE_CHECKING:
    from operator_ai.lab.faults import Fault

QUOTA_BYTES = 64 * 1024 * 1024
"""Small on purpose: the NOSPACE fault fills it with about seventy 1 MiB values."""


class Etcd:
    name = "etcd"
    description = "etcd 3.x: a Raft key-value store (observed through its gateway and /metrics)"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3

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

    def observe(self, lab: LabState, lab_dir: Path, timeout: float) -> Observation:
        return observe(lab, lab_dir, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        leader = observation.cluster.get("leader")
        return str(leader) if leader else None

    def faults(self) -> Mapping[str, Fault]:
        from operator_ai.subjects.etcd.faults import FAULTS

        return FAULTS

    def load(
        self,
        lab: LabState,
        lab_dir: Path,
        rate: float,
        duration: float | None,
        report: Callable[[dict[str, Any]], None],
    ) -> None:
        load.run(lab, lab_dir, rate, duration, report)

    def briefing(self, lab: LabState, lab_dir: Path) -> str:
        return briefing(lab, lab_dir)


subject = Etcd()
