"""etcd's own faults: NOSPACE, quorum loss, and a member left with a stale WAL."""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from operator_ai.errors import LabError
from operator_ai.lab import network
from operator_ai.lab.faults import CLUSTER, NODE, DiskFull, Fault, Injection
from operator_ai.lab.state import MODES, NETNS

if TYPE_CHECKING:
    from operator_ai.lab.runtime import Lab

NOSPACE_PREFIX = "operator-fault/nospace/"
VALUE = base64.b64encode(os.urandom(1024 * 1024)).decode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcdctl(lab: Lab, *args: str) -> str:
    endpoints = ",".join(n.url() for n in lab.state.nodes)
    return network.sh("etcdctl", f"--endpoints={endpoints}", "--command-timeout=20s", *args)


class NoSpace:
    name = "nospace"
    description = "write large values until the backend quota trips etcd's NOSPACE alarm"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: Lab, target: str, params: dict[str, str]) -> dict[str, Any]:
        leader = lab.leader()
        node = lab.state.node(leader) if leader else lab.state.nodes[0]
        with httpx.Client(timeout=20, trust_env=False) as client:
            for n in range(500):
                body = {"key": _b64(f"{NOSPACE_PREFIX}{n:04d}"), "value": VALUE}
                response = client.post(f"{node.url()}/v3/kv/put", json=body)
                if "database space exceeded" in response.text:
                    return {"writes": n}
                if response.status_code != 200:
                    raise LabError(f"nospace: a put failed before the quota: {response.text}")
        raise LabError("nospace: 500 MiB written and no NOSPACE alarm; is the quota set?")

    def revert(self, lab: Lab, injection: Injection) -> None:
        etcdctl(lab, "del", "--prefix", NOSPACE_PREFIX)
        revision = etcdctl(lab, "endpoint", "status", "-w", "json")
        current = max(int(m["Status"]["header"]["revision"]) for m in _json(revision))
        etcdctl(lab, "compaction", "--physical", str(current))
        etcdctl(lab, "defrag", "--cluster")
        etcdctl(lab, "alarm", "disarm")


def _json(text: str) -> list[dict[str, Any]]:
    import json

    value = json.loads(text)
    return value if isinstance(value, list) else [value]


class QuorumLoss:
    name = "quorum_loss"
    description = "kill a majority of the members, so the cluster cannot commit"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: Lab, target: str, params: dict[str, str]) -> dict[str, Any]:
        majority = len(lab.state.nodes) // 2 + 1
        victims = [n.name for n in lab.state.nodes][:majority]
        for name in victims:
            pid = lab.pid(name)
            if pid:
                os.kill(pid, signal.SIGKILL)
        return {"killed": victims}

    def revert(self, lab: Lab, injection: Injection) -> None:
        for name in injection.state["killed"]:
            lab.supervisor.start(name)


class StaleWal:
    name = "stale_wal"
    description = (
        "fill the member's disk so it crashes, leaving a data dir behind the cluster: "
        "restarting it panics, and the member must be replaced"
    )
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: Lab, target: str, params: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    def revert(self, lab: Lab, injection: Injection) -> None:
        DiskFull().revert(lab, injection)


FAULTS: dict[str, Fault] = {f.name: f for f in (NoSpace(), QuorumLoss(), StaleWal())}
