"""The rate limiter subject: the distributed rate limiter we ship (`service/`), three FastAPI nodes
sharing one Redis, as a subject the lab runs, breaks and watches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from operator_ai.errors import LabError
from operator_ai.lab import safefs
from operator_ai.lab.state import LabState
from operator_ai.subjects.ratelimiter import invariants, load
from operator_ai.subjects.ratelimiter.briefing import briefing, diagnostics
from operator_ai.subjects.ratelimiter.declared import LIMITS, REDIS, limits_path
from operator_ai.subjects.ratelimiter.faults import FAULTS
from operator_ai.subjects.ratelimiter.observe import observe

SERVICE = "operator_ai.subjects.ratelimiter.service"


class RateLimiter:
    name = "ratelimiter"
    description = "the sliding-window rate limiter we ship: FastAPI nodes sharing one Redis"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3
    runtimes = (PROCESS,)

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        limiters = {f"rl{i}": {"http": 8080} for i in range(1, nodes + 1)}
        return {REDIS: {"redis": 6379}, **limiters}

    def node_commands(self, lab: LabState, lab_dir: Path) -> dict[str, list[str]]:
        _check_python(lab)
        # The nodes (the lab user) read it; only root may change it.
        safefs.write_file(limits_path(lab_dir), json.dumps(LIMITS, indent=2) + "\n")
        redis = lab.node(REDIS)
        # Root's, where the lab user cannot replace it: a Redis config can load code
        # (loadmodule). CONFIG SET changes what Redis allows at run time.
        config = lab_dir / "run" / "redis.conf"
        safefs.write_file(
            config,
            f"bind {redis.address}\nport {redis.ports['redis']}\nprotected-mode no\n"
            f'dir {lab_dir / "data" / REDIS}\nsave ""\nappendonly no\n',
        )
        commands = {REDIS: ["redis-server", str(config)]}
        for node in lab.nodes:
            if node.name != REDIS:
                commands[node.name] = [
                    sys.executable, "-I", "-m", SERVICE,
                    "--node-id", node.name,
                    "--host", node.address, "--port", str(node.ports["http"]),
                    "--advertise", node.url("http"),
                    "--redis", f"redis://{redis.address}:{redis.ports['redis']}/0",
                    "--limits", str(limits_path(lab_dir)),
                ]  # fmt: skip
        return commands

    def observe(self, cluster: Cluster, timeout: float) -> Observation:
        return observe(cluster, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        return None  # no leader: every node is equal, Redis is the shared state

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


def _check_python(lab: LabState) -> None:
    """The nodes run this interpreter as the lab user, who must be able to execute it."""
    if os.geteuid() != 0 or lab.user == "root":
        return
    done = subprocess.run(
        ["runuser", "-u", lab.user, "--", sys.executable, "-c", f"import {SERVICE}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise LabError(
            f"the lab user {lab.user} cannot run {sys.executable} with operator_ai: "
            f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}",
            hint="Run `make setup` as root: it builds .venv on Debian's python3, which the lab "
            "user can run, in a directory it can read.",
        )


subject = RateLimiter()
