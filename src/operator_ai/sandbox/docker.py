"""The agent's commands in a throwaway container on a Docker lab's network.

Each command gets a fresh container of the lab's ops image (pd-ctl, tikv-ctl, curl, jq): an
unprivileged user, a read-only root with a private /tmp, every capability dropped, no new
privileges, limits on processes, memory and file size, the lab dir mounted read-only, and
no environment but a clean PATH. It has **no Docker socket**, so it cannot start or stop
the lab's containers. At a timeout the container is killed, which takes its whole PID
namespace with it; `--rm` removes what is left.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

from operator_ai.errors import SandboxError
from operator_ai.lab import Lab, docker
from operator_ai.lab.state import CLEAN_PATH, LabState
from operator_ai.sandbox import CONTAINER, DEFAULT_TIMEOUT, OUTPUT_CAP, CommandResult
from operator_ai.sandbox.capture import run_captured, unrunnable
from operator_ai.sandbox.limits import Limits


def run_argv(
    state: LabState, lab_dir: Path, image: str, name: str, command: str, limits: Limits
) -> list[str]:
    """The `docker run` line for one command."""
    return [
        "docker",
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        docker.lab_network(state.prefix),
        "--user",
        "10001:10001",
        "--read-only",
        "--tmpfs",
        f"/tmp:rw,noexec,nosuid,size={limits.tmp_size}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--pids-limit",
        str(limits.tasks),
        "--memory",
        str(limits.memory),
        "--ulimit",
        f"fsize={limits.file_size}",
        "--ulimit",
        "core=0",
        "--volume",
        f"{lab_dir.resolve()}:/lab:ro",
        "--workdir",
        "/tmp",
        "--env",
        f"PATH={CLEAN_PATH}",
        "--env",
        "HOME=/tmp",
        "--env",
        "TERM=dumb",
        "--label",
        f"operator.lab={state.prefix}",
        image,
        "bash",
        "-c",
        command,
    ]


class DockerSandbox:
    name = CONTAINER
    warning: str | None = None

    def __init__(self, lab: Lab, image: str, limits: Limits | None = None) -> None:
        problem = docker.engine_problem()
        if problem:
            raise SandboxError(
                f"the docker sandbox needs a Docker engine: {problem}",
                hint=docker.INSTALL_HINT.format(subject=lab.state.subject),
            )
        self.lab = lab
        self.image = image
        self.limits = limits or Limits()

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        if rejected := unrunnable(command):
            return rejected
        name = f"{self.lab.state.prefix}-sbx-{secrets.token_hex(4)}"
        argv = run_argv(self.lab.state, self.lab.path, self.image, name, command, self.limits)

        def stop(proc: subprocess.Popen[bytes]) -> None:
            if proc.poll() is None:  # the deadline: the container, not just the client
                subprocess.run(["docker", "kill", name], capture_output=True, check=False)
                proc.kill()

        env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
        return run_captured(argv, env=env, timeout=timeout, stop=stop, cap=OUTPUT_CAP).result


def sandbox(lab: Lab, home: Path, hide: Sequence[Path]) -> DockerSandbox:
    """The ``docker`` SandboxFactory. ``home`` and ``hide`` are never in the container: it
    mounts only the lab directory."""
    return DockerSandbox(lab, lab.state.extra["ops_image"])
