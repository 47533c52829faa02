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
import shutil
import subprocess
from pathlib import Path
from typing import Any

from operator_ai.errors import LabError
from operator_ai.lab import network
from operator_ai.lab.state import LabState

TOOLS_IMAGE = "nicolaka/netshoot:v0.13"
"""tc, iptables, dd and df in one image: the helper for network and disk faults."""
INSTALL_HINT = (
    "Install Docker Engine with its compose plugin "
    "(https://docs.docker.com/engine/install/debian/), start it (`systemctl start docker`), "
    "then run `operator lab up {subject} --runtime docker`."
)
STATES = {
    "running": "RUNNING",
    "paused": "PAUSED",
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


def container(state: LabState, node: str) -> str:
    return f"{state.prefix}-{state.node(node).name}"


def lab_network(state: LabState) -> str:
    return f"{state.prefix}-net"


def compose(state: LabState, lab_dir: Path, *args: str) -> list[str]:
    return [
        "docker",
        "compose",
        "--project-name",
        state.prefix,
        "--file",
        str(lab_dir / "compose.yaml"),
        *args,
    ]


def up(state: LabState, lab_dir: Path) -> list[list[str]]:
    """Build the tool images the lab names, then start every service in the background."""
    return [
        compose(state, lab_dir, "--profile", "tools", "build", "--quiet"),
        compose(state, lab_dir, "up", "--detach", "--quiet-pull"),
    ]


def down(state: LabState, lab_dir: Path) -> list[str]:
    """Remove the containers (a running load's too: every profile), the network and the
    volumes: nothing of the lab stays."""
    return compose(state, lab_dir, "--profile", "*", "down", "--volumes", "--remove-orphans",
                   "--timeout", "5")  # fmt: skip


def in_netns(state: LabState, node: str, *command: str) -> list[str]:
    """``command`` in a helper container sharing ``node``'s network namespace."""
    return [
        "docker",
        "run",
        "--rm",
        "--network",
        f"container:{container(state, node)}",
        "--cap-add",
        "NET_ADMIN",
        TOOLS_IMAGE,
        *command,
    ]


def with_volumes(state: LabState, node: str, script: str) -> list[str]:
    """``script`` in a helper container that mounts ``node``'s volumes, running or not."""
    return [
        "docker",
        "run",
        "--rm",
        "--volumes-from",
        container(state, node),
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


def address(state: LabState, node: str) -> str:
    """A container's address on the lab network."""
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    out = run(["docker", "inspect", "--format", fmt, container(state, node)]).split()
    if not out:
        raise LabError(f"{node} has no address on the lab network (is it running?)")
    return out[0]


class Containers:
    """The lab's nodes as containers, behind the calls the runtime makes of supervisord."""

    def __init__(self, state: LabState) -> None:
        self.state = state

    def info(self, name: str) -> dict[str, Any]:
        out = run(
            ["docker", "inspect", "--format", "{{json .State}}", container(self.state, name)],
            check=False,
        )
        try:
            seen = json.loads(out)
        except ValueError:
            return {"name": name, "pid": 0, "statename": "ABSENT"}
        return {
            "name": name,
            "pid": seen.get("Pid") or 0,
            "statename": STATES.get(seen.get("Status", ""), "UNKNOWN"),
        }

    def all_info(self) -> list[dict[str, Any]]:
        return [self.info(n.name) for n in self.state.nodes]

    def start(self, name: str) -> None:
        info = self.info(name)
        if info["statename"] == "PAUSED":
            run(["docker", "unpause", container(self.state, name)])
        elif info["statename"] != "RUNNING":
            run(["docker", "start", container(self.state, name)])

    def stop(self, name: str) -> None:
        if self.info(name)["statename"] == "RUNNING":
            run(["docker", "stop", "--time", "10", container(self.state, name)])

    def running(self) -> bool:
        return any(i["statename"] in ("RUNNING", "PAUSED") for i in self.all_info())
