"""Faults on a Docker lab: the docker CLI for the containers themselves (kill, stop,
pause), and `tc`/`iptables` in a NET_ADMIN helper that joins the target's network namespace
(delay, loss, partition). Disk pressure fills the store's own ext4 disk from a helper that
mounts its volumes, so it works whether the store is running or not.

Each fault builds its commands as argv lists (``commands``/``undo``) and only ``inject``
and ``revert`` run them, so what a fault would do is tested without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operator_ai.core import DOCKER, NODE, Injection, LabHandle
from operator_ai.errors import LabError
from operator_ai.lab import docker
from operator_ai.lab.faults import number
from operator_ai.lab.injections import Injections

FILL_FILE = "/data/.operator-fill"
NETEM = ("delay", "loss")


class _Fault:
    name = ""
    description = ""
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (DOCKER,)
    target = NODE

    def commands(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        raise NotImplementedError

    def undo(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        return []

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        for argv in self.commands(lab.prefix, target, params):
            docker.run(argv)
        return {}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        for argv in self.undo(lab.prefix, injection.target, injection.params):
            docker.run(argv, check=False)


class Kill(_Fault):
    name = "kill"
    description = "docker kill the node's container (SIGKILL); it stays down until started"

    def commands(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        return [["docker", "kill", "--signal", "KILL", docker.container(prefix, target)]]

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        lab.cluster.control.start(injection.target)


class Stop(Kill):
    name = "stop"
    description = "docker stop the node's container; it stays down until started"

    def commands(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        return [["docker", "stop", "--time", "10", docker.container(prefix, target)]]


class Pause(_Fault):
    name = "pause"
    description = "docker pause the node's container (its processes freeze); revert unpauses"

    def commands(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        return [["docker", "pause", docker.container(prefix, target)]]

    def undo(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        return [["docker", "unpause", docker.container(prefix, target)]]


class _Netem(_Fault):
    """A netem qdisc on the container's interface (Docker hosts have netem; this one not)."""

    def netem(self, params: dict[str, str]) -> list[str]:
        raise NotImplementedError

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        # One root qdisc per interface: a second netem fault would replace the first.
        for active in Injections(lab.path).active():
            if active.target == target and active.fault in NETEM:
                raise LabError(
                    f"{target} already has {active.fault} (injection {active.id}); "
                    "delay and loss share one netem qdisc",
                    hint=f"`operator chaos revert {active.id}` first.",
                )
        return super().inject(lab, target, params)

    def commands(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        tc = ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", *self.netem(params)]
        return [docker.in_netns(prefix, target, *tc)]

    def undo(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        return [docker.in_netns(prefix, target, "tc", "qdisc", "del", "dev", "eth0", "root")]


class Delay(_Netem):
    name = "delay"
    description = "add latency to everything the node sends (tc netem in its namespace)"
    params: Mapping[str, tuple[str, str]] = {
        "ms": ("200", "added delay in milliseconds"),
        "jitter": ("0", "random variation in milliseconds"),
    }

    def netem(self, params: dict[str, str]) -> list[str]:
        ms, jitter = number(params, "ms", 1, 60_000), number(params, "jitter", 0, 60_000)
        return ["delay", f"{ms:g}ms", *([f"{jitter:g}ms"] if jitter else [])]


class Loss(_Netem):
    name = "loss"
    description = "drop a share of the packets the node sends (tc netem in its namespace)"
    params: Mapping[str, tuple[str, str]] = {"percent": ("30", "share of packets dropped")}

    def netem(self, params: dict[str, str]) -> list[str]:
        return ["loss", f"{number(params, 'percent', 0, 100):g}%"]


class Partition(_Fault):
    name = "partition"
    description = "drop the node's traffic to and from its PD and TiKV peers (iptables)"

    def rules(self, action: str, peers: list[str]) -> str:
        # Added all or nothing; removed one by one, so one missing rule spares the rest.
        return (" && " if action == "-I" else "; ").join(
            f"iptables {action} INPUT -s {ip} -j DROP && iptables {action} OUTPUT -d {ip} -j DROP"
            for ip in peers
        )

    def peers(self, lab: LabHandle, target: str) -> list[str]:
        cluster = lab.cluster
        names = [n.name for n in cluster.nodes if n.name != target and n.name != "prometheus"]
        return [docker.address(lab.prefix, n) for n in names if cluster.pid(n)]

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        peers = self.peers(lab, target)
        if not peers:
            raise LabError(f"{target} has no running peers to be cut off from")
        docker.run(docker.in_netns(lab.prefix, target, "sh", "-c", self.rules("-I", peers)))
        return {"peers": peers}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        script = self.rules("-D", injection.state["peers"])
        docker.run(docker.in_netns(lab.prefix, injection.target, "sh", "-c", script), check=False)


class DiskPressure(_Fault):
    name = "disk_pressure"
    description = "fill the store's data disk until only a little is left"
    params: Mapping[str, tuple[str, str]] = {"leave_mb": ("100", "MiB left free")}

    def commands(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        if not target.startswith("tikv"):
            raise LabError("disk_pressure targets a store (tikv1, tikv2, ...)")
        leave = int(number(params, "leave_mb", 0, 100_000))
        fill = (
            f"free=$(df -Pm /data | awk 'NR==2 {{print $4}}'); "
            f"dd if=/dev/zero of={FILL_FILE} bs=1M count=$((free - {leave})) && sync"
        )
        return [docker.with_volumes(prefix, target, fill)]

    def undo(self, prefix: str, target: str, params: dict[str, str]) -> list[list[str]]:
        return [docker.with_volumes(prefix, target, f"rm -f {FILL_FILE}")]


FAULTS = {
    f.name: f for f in (Kill(), Stop(), Pause(), Delay(), Loss(), Partition(), DiskPressure())
}
