"""TiKV: 3 PD and 3 TiKV nodes with Prometheus, in Docker Compose (`compose.py`).

TiKV ships no Debian package, so its lab has only the Docker runtime. The monitor side
(``observe``, the invariants) needs no Docker at all: it reads PD's HTTP API and Prometheus,
which the lab publishes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from operator_ai.core import (
    DOCKER,
    Cluster,
    Fault,
    Invariant,
    Observation,
    Report,
    Stopping,
    Violation,
)
from operator_ai.errors import LabError
from operator_ai.lab import docker
from operator_ai.lab.state import LabState
from operator_ai.subjects.tikv import compose, invariants
from operator_ai.subjects.tikv.briefing import briefing, diagnostics
from operator_ai.subjects.tikv.faults import FAULTS
from operator_ai.subjects.tikv.observe import observe

RECORDS = 10_000


class TiKV:
    name = "tikv"
    description = "TiKV with PD and Prometheus, in Docker (observed through PD's API)"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3
    runtimes = (DOCKER,)

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        return compose.topology(nodes)

    def compose(self, lab: LabState, lab_dir: Path) -> dict[str, Any]:
        return compose.write(lab, lab_dir)

    def observe(self, cluster: Cluster, timeout: float) -> Observation:
        return observe(cluster, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        """PD's leader: `chaos inject kill -t leader` kills it."""
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
        """go-ycsb's workload A (half reads, half updates) on raw TiKV, at ``rate`` ops/s.
        Its own progress lines go to the lab's logs/load.log; the monitor sees the load in
        Prometheus."""
        with open(cluster.workdir / "logs" / "load.log", "ab") as log:
            for argv in load_commands(cluster, rate, duration):
                child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                try:
                    while child.poll() is None and not stop.is_set():
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            child.wait(timeout=0.5)
                finally:
                    if child.poll() is None:
                        child.terminate()
                        try:
                            child.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            child.kill()  # our child, not reaped yet: its PID is its own
                            child.wait()
                if stop.is_set():
                    return
                if child.returncode != 0:
                    raise LabError(f"go-ycsb exited with {child.returncode}; see logs/load.log")

    def briefing(self, cluster: Cluster) -> str:
        return briefing(cluster)

    def diagnostics(self, cluster: Cluster, targets: Sequence[str]) -> list[str]:
        return diagnostics(cluster, targets)


def load_commands(cluster: Cluster, rate: float, duration: float | None) -> list[list[str]]:
    """Insert the records once, then run workload A at ``rate`` for ``duration`` seconds."""
    operations = int(rate * duration) if duration else 10**12
    compose_run = docker.compose(
        compose.project(cluster), cluster.workdir, "--profile", "load", "run"
    )
    ycsb = [*compose_run, "--rm", "-T", "ycsb"]
    common = [
        "tikv",
        "-P",
        "/workloads/workloada",
        "-p",
        f"recordcount={RECORDS}",
        "-p",
        f"tikv.pd={','.join(compose.pd_endpoints(cluster.nodes))}",
        "-p",
        "tikv.type=raw",
    ]
    return [
        [*ycsb, "load", *common],
        [
            *ycsb,
            "run",
            *common,
            "-p",
            f"operationcount={operations}",
            "-p",
            f"target={max(1, round(rate))}",
        ],
    ]


subject = TiKV()
