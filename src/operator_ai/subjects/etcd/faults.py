"""etcd's own faults: NOSPACE, quorum loss, and a member left with a stale WAL."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import httpx

from operator_ai.core import CLUSTER, MODES, NETNS, NODE, Fault, Injection, LabHandle
from operator_ai.errors import LabError, SubjectUnreachable
from operator_ai.lab import network
from operator_ai.lab.faults import DiskFull, kill_node

NOSPACE_PREFIX = "operator-fault/nospace/"
VALUE = base64.b64encode(os.urandom(1024 * 1024)).decode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcdctl(lab: LabHandle, *args: str, nodes: list[str] | None = None) -> str:
    chosen = [n for n in lab.cluster.nodes if nodes is None or n.name in nodes]
    endpoints = ",".join(n.url() for n in chosen)
    return network.sh("etcdctl", f"--endpoints={endpoints}", "--command-timeout=20s", *args)


def compact(lab: LabHandle, nodes: list[str] | None = None) -> None:
    """Drop the key history and give the space back, on ``nodes`` (all by default)."""
    status = _json(etcdctl(lab, "endpoint", "status", "-w", "json", nodes=nodes))
    current = max(int(m["Status"]["header"]["revision"]) for m in status)
    etcdctl(lab, "compaction", "--physical", str(current), nodes=nodes)
    etcdctl(lab, "defrag", nodes=nodes)


class NoSpace:
    name = "nospace"
    description = "write large values until the backend quota trips etcd's NOSPACE alarm"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        leader = lab.leader()
        node = lab.cluster.node(leader) if leader else lab.cluster.nodes[0]
        with httpx.Client(timeout=20, trust_env=False) as client:
            for n in range(500):
                body = {"key": _b64(f"{NOSPACE_PREFIX}{n:04d}"), "value": VALUE}
                response = client.post(f"{node.url()}/v3/kv/put", json=body)
                if "database space exceeded" in response.text:
                    return {"writes": n}
                if response.status_code != 200:
                    raise LabError(f"nospace: a put failed before the quota: {response.text}")
        raise LabError("nospace: 500 MiB written and no NOSPACE alarm; is the quota set?")

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        etcdctl(lab, "del", "--prefix", NOSPACE_PREFIX)
        compact(lab)
        etcdctl(lab, "alarm", "disarm")


def _json(text: str) -> list[dict[str, Any]]:
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


class QuorumLoss:
    name = "quorum_loss"
    description = "kill a majority of the members, so the cluster cannot commit"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        majority = len(lab.cluster.nodes) // 2 + 1
        victims = [n.name for n in lab.cluster.nodes][:majority]
        for name in victims:
            if lab.cluster.pid(name):
                kill_node(lab, name)
        return {"killed": victims}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        for name in injection.state["killed"]:
            lab.cluster.control.start(name)


class StaleWal:
    name = "stale_wal"
    description = (
        "fill a follower's disk until it crashes, then lose the tail of its WAL as a full "
        "disk can: a restart panics (tocommit out of range) and the member must be replaced"
    )
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE
    keep_bytes = 32 * 1024

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        leader = lab.leader()
        if leader is None or leader == target:
            # With another leader, the new one probes the member and it quietly catches up.
            raise LabError(
                "stale_wal needs a follower of a cluster that has a leader",
                hint="Use --target follower.",
            )
        with httpx.Client(timeout=10, trust_env=False) as client:
            url = f"{lab.cluster.node(leader).url()}/v3/kv/put"
            for n in range(2000):  # WAL entries beyond the point where the tail is cut
                client.post(url, json={"key": _b64(f"operator-fault/wal/{n}"), "value": _b64("x")})
            disk = DiskFull()
            state = disk.inject(lab, target, {})
            big = base64.b64encode(os.urandom(16 * 1024)).decode()
            for n in range(2000):
                if lab.cluster.pid(target) is None:
                    break
                client.post(
                    url, json={"key": _b64(f"operator-fault/wal/big{n % 50}"), "value": big}
                )
            else:
                disk.revert(lab, Injection(0, disk.name, target, {}, "", state=state))
                raise LabError(f"{target} did not crash on its full disk")
        disk.revert(lab, Injection(0, disk.name, target, {}, "", state=state))
        # The big writes leave history that would trip db_near_quota; only the WAL is the fault.
        etcdctl(lab, "del", "--prefix", "operator-fault/wal/", nodes=[leader])
        compact(lab, [n.name for n in lab.cluster.nodes if n.name != target])
        wal_dir = f"{state['data']}/member/wal"
        newest = sorted(lab.as_user("ls", wal_dir).split())[-1]
        lab.as_user("truncate", "-s", str(self.keep_bytes), f"{wal_dir}/{newest}")
        return {"wal": f"{wal_dir}/{newest}"}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        """Replace the member: remove it, add it back, and start it on an empty data dir."""
        name = injection.target
        node = lab.cluster.node(name)
        lab.cluster.control.stop(name)
        # The config is the lab user's to edit, so it is read and written as the lab user.
        config_path = str(lab.path / "conf" / f"{name}.yml")
        config = json.loads(lab.as_user("cat", config_path))
        config["initial-cluster-state"] = "existing"
        text = json.dumps(config, indent=2) + "\n"
        lab.as_user("sh", "-c", 'cat > "$1"', "sh", config_path, input=text)
        listed = json.loads(etcdctl(lab, "member", "list", "-w", "json"))
        for member in listed.get("members", []):
            if member.get("name") == name or node.url("peer") in member.get("peerURLs", []):
                etcdctl(lab, "member", "remove", f"{member['ID']:x}")
        etcdctl(lab, "member", "add", name, f"--peer-urls={node.url('peer')}")
        lab.as_user("rm", "-rf", str(lab.path / "data" / name / "member"))
        lab.cluster.control.start(name)
        # The new member replays the raft log, big writes included; defrag gives the space back.
        _wait_caught_up(lab, name)
        etcdctl(lab, "defrag", nodes=[name])


def _wait_caught_up(lab: LabHandle, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            nodes = lab.observe().nodes
        except SubjectUnreachable:
            nodes = {}
        applied = [m["raft_applied"] for o, m in nodes.items() if o != name and m["reachable"]]
        if applied and nodes[name].get("raft_applied", 0) >= min(applied):
            return
        time.sleep(0.5)
    raise LabError(f"the replaced member {name} did not catch up within {timeout:.0f} s")


FAULTS: dict[str, Fault] = {f.name: f for f in (NoSpace(), QuorumLoss(), StaleWal())}
