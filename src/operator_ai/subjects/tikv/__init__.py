"""TiKV: 3 PD and 3 TiKV nodes with Prometheus, in Docker Compose (`compose.py`).

TiKV ships no Debian package, so its lab has only the Docker runtime. The monitor side
(``observe``, the invariants) needs no Docker at all: it reads PD's HTTP API and Prometheus,
which the lab publishes on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operator_ai.errors import LabError
from operator_ai.lab import docker
from operator_ai.lab.state import DOCKER, LabState
from operator_ai.store.records import Violation
from operator_ai.subjects import Invariant, Observation
from operator_ai.subjects.tikv import compose, invariants
from operator_ai.subjects.tikv.briefing import briefing
from operator_ai.subjects.tikv.observe import observe

if TYPE_CHECKING:
    from operator_ai.lab.faults import Fault

RECORDS = 10_000


class TiKV:
    name = "tikv"
    description = "TiKV with PD and Prometheus, in Docker (observed through PD's API)"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3
    runtimes = (DOCKER,)

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        return compose.topology(nodes)

    def node_commands(self, lab: LabState, lab_dir: Path) -> dict[str, list[str]]:
        raise LabError("TiKV runs only in Docker", hint="`operator lab up tikv --runtime docker`.")

    def compose(self, lab: LabState, lab_dir: Path) -> dict[str, Any]:
        return compose.write(lab, lab_dir)

    def observe(self, lab: LabState, lab_dir: Path, timeout: float) -> Observation:
        return observe(lab, lab_dir, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        """PD's leader: `chaos inject kill -t leader` kills it."""
        leader = observation.cluster.get("leader")
        return str(leader) if leader else None

    def faults(self) -> Mapping[str, Fault]:
        from operator_ai.subjects.tikv.faults import FAULTS

        return FAULTS

    def load(
        self,
        lab: LabState,
        lab_dir: Path,
        rate: float,
        duration: float | None,
        report: Callable[[dict[str, Any]], None],
    ) -> None:
        """go-ycsb's workload A (half reads, half updates) on raw TiKV, at ``rate`` ops/s.
        Its own progress lines go to the terminal; the monitor sees the load in Prometheus."""
        for argv in load_commands(lab, lab_dir, rate, duration):
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr, check=False)
            if done.returncode != 0:
                raise LabError(f"go-ycsb exited with {done.returncode}")

    def briefing(self, lab: LabState, lab_dir: Path) -> str:
        return briefing(lab, lab_dir)


def load_commands(
    lab: LabState, lab_dir: Path, rate: float, duration: float | None
) -> list[list[str]]:
    """Insert the records once, then run workload A at ``rate`` for ``duration`` seconds."""
    operations = int(rate * duration) if duration else 10**12
    ycsb = [*docker.compose(lab, lab_dir, "--profile", "load", "run", "--rm", "-T", "ycsb")]
    common = [
        "tikv",
        "-P",
        "/workloads/workloada",
        "-p",
        f"recordcount={RECORDS}",
        "-p",
        f"tikv.pd={','.join(compose.pd_endpoints(lab))}",
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
