"""The distributed rate limiter we ship (`operator_ai.ratelimiter`): three FastAPI nodes
sharing one Redis, as a subject the lab runs, breaks and watches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operator_ai.errors import LabError
from operator_ai.lab import safefs
from operator_ai.lab.state import LabState
from operator_ai.store.records import Violation
from operator_ai.subjects import Invariant, Observation
from operator_ai.subjects.ratelimiter import invariants
from operator_ai.subjects.ratelimiter.briefing import briefing
from operator_ai.subjects.ratelimiter.observe import observe

if TYPE_CHECKING:
    from operator_ai.lab.faults import Fault

REDIS = "redis"
LIMITS = {
    "default": {"limit": 100, "window_ms": 1000},
    "keys": {
        "user:alice": {"limit": 10, "window_ms": 1000},
        "user:bob": {"limit": 20, "window_ms": 1000},
        "tenant:acme": {"limit": 50, "window_ms": 1000},
        "api:search": {"limit": 100, "window_ms": 1000},
    },
}
"""The declared limits the lab starts with (run/limits.json), and the load generator's keys."""


def limits_path(lab_dir: Path) -> Path:
    """The declared limits: the monitor's truth, so root-owned beside the launch scripts,
    where the agent (the lab user) can read them but not rewrite them to clear a ticket."""
    return lab_dir / "run" / "limits.json"


def declared(lab_dir: Path) -> dict[str, dict[str, int]]:
    """Each declared key's limit and window, as the lab's limits file says."""
    data = json.loads(limits_path(lab_dir).read_text())
    return {key: dict(value) for key, value in data["keys"].items()}


class RateLimiter:
    name = "ratelimiter"
    description = "the sliding-window rate limiter we ship: FastAPI nodes sharing one Redis"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3

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
                    sys.executable, "-I", "-m", "operator_ai.ratelimiter",
                    "--node-id", node.name,
                    "--host", node.address, "--port", str(node.ports["http"]),
                    "--advertise", node.url("http"),
                    "--redis", f"redis://{redis.address}:{redis.ports['redis']}/0",
                    "--limits", str(limits_path(lab_dir)),
                ]  # fmt: skip
        return commands

    def observe(self, lab: LabState, lab_dir: Path, timeout: float) -> Observation:
        return observe(lab, lab_dir, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        return None  # no leader: every node is equal, Redis is the shared state

    def faults(self) -> Mapping[str, Fault]:
        from operator_ai.subjects.ratelimiter.faults import FAULTS

        return FAULTS

    def load(
        self,
        lab: LabState,
        lab_dir: Path,
        rate: float,
        duration: float | None,
        report: Callable[[dict[str, Any]], None],
    ) -> None:
        from operator_ai.subjects.ratelimiter import load

        load.run(lab, lab_dir, rate, duration, report)

    def briefing(self, lab: LabState, lab_dir: Path) -> str:
        return briefing(lab, lab_dir)


def _check_python(lab: LabState) -> None:
    """The nodes run this interpreter as the lab user, who must be able to execute it."""
    if os.geteuid() != 0 or lab.user == "root":
        return
    done = subprocess.run(
        ["runuser", "-u", lab.user, "--", sys.executable, "-c", "import operator_ai.ratelimiter"],
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
