"""The Docker Compose runtime: a lab whose nodes are containers on one compose network.

A subject that cannot run as plain processes here (TiKV ships no Debian package) describes
its lab as a compose file instead (``compose(state, lab_dir)``). The lab directory stays the
lab's only state: `compose.yaml` beside `lab.json`, the compose project named by the lab's
prefix, each container named `<prefix>-<node>`, each published port bound to 127.0.0.1.

What supervisord is to the process runtime, ``Containers`` is here: start, stop and state
per node, through the docker CLI. Network faults run `tc` and `iptables` in a helper
container that joins the target's network namespace with NET_ADMIN (``in_netns``), so the
cluster's images need neither the tools nor the capability.

Everything here builds argv lists; only ``run`` executes them, so the command building is
tested on machines without an engine.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from operator_ai.core import DOCKER, PAUSED, RUNNING, NodeStatus, Subject
from operator_ai.errors import LabError
from operator_ai.lab import network
from operator_ai.lab.network import free_port
from operator_ai.lab.state import LabDir, LabNode, LabState, Progress, private_dir

TOOLS_IMAGE = "nicolaka/netshoot:v0.13"
"""tc, iptables, dd and df in one image: the helper for network and disk faults."""
INSTALL_HINT = (
    "Install Docker Engine with its compose plugin "
    "(https://docs.docker.com/engine/install/debian/), start it (`systemctl start docker`), "
    "then run `operator lab up {subject} --runtime docker`."
)
STATES = {
    "running": RUNNING,
    "paused": PAUSED,
    "exited": "EXITED",
    "created": "STOPPED",
    "restarting": "STARTING",
    "removing": "STOPPING",
    "dead": "FATAL",
}
"""Docker's container states in supervisord's words, so `lab status` reads the same."""


def engine_problem() -> str | None:
    """Why no Docker engine can be used from here, or None when one answers."""
    if shutil.which("docker") is None:
        return "there is no `docker` command on this machine"
    try:
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 15 s"
    if done.returncode != 0:
        return f"no Docker engine answers: {done.stderr.strip() or done.returncode}"
    return None


def require_engine(subject: str) -> None:
    problem = engine_problem()
    if problem:
        raise LabError(
            f"the {subject} lab runs in Docker, and {problem}",
            hint=INSTALL_HINT.format(subject=subject),
        )


def run(argv: list[str], timeout: float = 120.0, check: bool = True) -> str:
    """Run one docker command; a failure is a LabError that quotes its stderr."""
    return network.sh(*argv, check=check, timeout=timeout)


def container(prefix: str, node: str) -> str:
    return f"{prefix}-{node}"


def lab_network(prefix: str) -> str:
    return f"{prefix}-net"


def compose(prefix: str, lab_dir: Path, *args: str) -> list[str]:
    return [
        "docker",
        "compose",
        "--project-name",
        prefix,
        "--file",
        str(lab_dir / "compose.yaml"),
        *args,
    ]


def up(prefix: str, lab_dir: Path) -> list[list[str]]:
    """Build the tool images the lab names, then start every service in the background."""
    return [
        compose(prefix, lab_dir, "--profile", "tools", "build", "--quiet"),
        compose(prefix, lab_dir, "up", "--detach", "--quiet-pull"),
    ]


def down(prefix: str, lab_dir: Path) -> list[str]:
    """Remove the containers (a running load's too: every profile), the network and the
    volumes: nothing of the lab stays."""
    return compose(prefix, lab_dir, "--profile", "*", "down", "--volumes", "--remove-orphans",
                   "--timeout", "5")  # fmt: skip


def in_netns(prefix: str, node: str, *command: str) -> list[str]:
    """``command`` in a helper container sharing ``node``'s network namespace."""
    return [
        "docker",
        "run",
        "--rm",
        "--network",
        f"container:{container(prefix, node)}",
        "--cap-add",
        "NET_ADMIN",
        TOOLS_IMAGE,
        *command,
    ]


def with_volumes(prefix: str, node: str, script: str) -> list[str]:
    """``script`` in a helper container that mounts ``node``'s volumes, running or not."""
    return [
        "docker",
        "run",
        "--rm",
        "--volumes-from",
        container(prefix, node),
        TOOLS_IMAGE,
        "sh",
        "-c",
        script,
    ]


def loop_disk(image: Path, size: str) -> str:
    """A small ext4 filesystem on a loop device over ``image``; returns the device, which a
    compose volume mounts. Root only, like Docker itself."""
    image.parent.mkdir(parents=True, exist_ok=True)
    network.sh("truncate", "-s", size, str(image))
    network.sh("mkfs.ext4", "-q", "-F", str(image), timeout=120)
    return network.sh("losetup", "--find", "--show", str(image)).strip()


def release_loops(disks: Path) -> list[str]:
    """Detach every loop device over an image in ``disks``, found by its backing file, so
    a lab that crashed half-way through ``up`` is cleaned up as well."""
    released = []
    for image in sorted(disks.glob("*.img")):
        for line in network.sh("losetup", "--associated", str(image), check=False).splitlines():
            device = line.split(":", 1)[0]
            network.sh("losetup", "--detach", device, check=False)
            released.append(f"loop device {device}")
    return released


def address(prefix: str, node: str) -> str:
    """A container's address on the lab network."""
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    out = run(["docker", "inspect", "--format", fmt, container(prefix, node)]).split()
    if not out:
        raise LabError(f"{node} has no address on the lab network (is it running?)")
    return out[0]


class Containers:
    """The lab's nodes as containers: the Compose runtime's NodeControl."""

    def __init__(self, prefix: str, nodes: Sequence[str]) -> None:
        self.prefix = prefix
        self.nodes = list(nodes)

    def status(self, node: str) -> NodeStatus:
        out = run(
            ["docker", "inspect", "--format", "{{json .State}}", container(self.prefix, node)],
            check=False,
        )
        try:
            seen = json.loads(out)
        except ValueError:
            return NodeStatus(node, "ABSENT")
        state = STATES.get(seen.get("Status", ""), "UNKNOWN")
        return NodeStatus(node, state, seen.get("Pid") or None)

    def statuses(self) -> list[NodeStatus]:
        return [self.status(n) for n in self.nodes]

    def start(self, node: str) -> None:
        state = self.status(node).state
        if state == PAUSED:
            run(["docker", "unpause", container(self.prefix, node)])
        elif state != RUNNING:
            run(["docker", "start", container(self.prefix, node)])

    def stop(self, node: str) -> None:
        if self.status(node).state == RUNNING:
            run(["docker", "stop", "--time", "10", container(self.prefix, node)])

    def restart(self, node: str) -> None:
        self.stop(node)
        self.start(node)

    def signal(self, node: str, sig: signal.Signals) -> int:
        status = self.status(node)
        if status.state != RUNNING or status.pid is None:
            raise LabError(f"{node} is not running")
        run(["docker", "kill", "--signal", sig.name, container(self.prefix, node)])
        return status.pid

    def running(self) -> bool:
        return any(s.state in (RUNNING, PAUSED) for s in self.statuses())


@runtime_checkable
class ComposeSubject(Subject, Protocol):
    """A subject whose lab is a compose file (TiKV's)."""

    def compose(self, state: LabState, lab_dir: Path) -> dict[str, Any]:
        """Write the lab's files under ``lab_dir`` and return its compose file."""
        ...


class ComposeRuntime:
    """A lab of containers on one compose network; their ports are published on 127.0.0.1,
    so the monitor reaches them as it does a loopback lab's."""

    def __init__(self, lab_dir: LabDir) -> None:
        self.dir = lab_dir
        self.path = lab_dir.path

    def up(self, subject: Subject, nodes: int, mode: str | None, user: str,
           progress: Progress) -> LabState:  # fmt: skip
        if not isinstance(subject, ComposeSubject):
            raise LabError(
                f"{subject.name} has no Docker lab",
                hint=f"`operator lab up {subject.name}` runs it as processes.",
            )
        state = LabState(
            name=self.dir.name,
            subject=subject.name,
            mode=DOCKER,
            prefix=self.dir.prefix,
            user=pwd.getpwuid(os.geteuid()).pw_name,
            nodes=[
                LabNode(n, "127.0.0.1", {p: free_port() for p in ports})
                for n, ports in subject.topology(nodes).items()
            ],
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        for sub in ("conf", "logs", "tmp"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        private_dir(self.path).mkdir(mode=0o700, exist_ok=True)
        spec = subject.compose(state, self.path)
        (self.path / "compose.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        self.dir.save(state)
        progress(f"starting {len(state.nodes)} containers (images are pulled the first time)")
        for argv in up(state.prefix, self.path):
            run(argv, timeout=1800)
        return state

    def control(self, state: LabState) -> Containers:
        return Containers(state.prefix, [n.name for n in state.nodes])

    def running(self, state: LabState) -> bool:
        return engine_problem() is None and self.control(state).running()

    def down(self, state: LabState | None, progress: Progress) -> list[str]:
        removed = []
        try:
            if state and state.mode == DOCKER and engine_problem() is None:
                progress("removing the lab's containers, network and volumes")
                run(down(state.prefix, self.path), timeout=300)
                removed.append(f"compose project {state.prefix}")
        finally:  # a store's disk is released even when compose could not take it down
            if os.geteuid() == 0:
                removed += release_loops(self.path / "disks")
        return removed
