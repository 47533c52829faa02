"""Redis with Sentinel's own faults. Killing, stopping or pausing a server or a sentinel is
the lab's generic `kill`, `stop` and `pause` (`-t redis1`, `-t sentinel2`, `-t leader` for
the primary); a network fault on either strikes both, as they share a host."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import redis

from operator_ai.core import CLUSTER, MODES, NETNS, NODE, Fault, Injection, LabHandle, Node
from operator_ai.errors import LabError, UsageError
from operator_ai.lab.faults import (
    GENERIC,
    delay_traffic,
    leader_node,
    node_among,
    number,
    start_nodes,
    stop_nodes,
    undelay,
    undone,
)
from operator_ai.subjects.redis.nodes import connect, quorum, sentinel_of, sentinels, servers

TIMEOUT = 5.0
FILL_VALUE = 256 * 1024
FILL_PREFIX = "cache:blob:"


def _server(lab: LabHandle, target: str) -> Node:
    return node_among(lab, target, servers(lab.cluster), "a Redis server")


def _primary(lab: LabHandle) -> Node:
    return leader_node(lab, "the sentinels name no primary")


class SplitBrain:
    name = "split_brain"
    description = (
        "partition the primary from the other servers and every other sentinel, but not from "
        "the clients on the host: it keeps taking writes while the others fail over"
    )
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        if _primary(lab).name != _server(lab, target).name:
            raise UsageError(f"{target} is not the primary", hint="Target the primary: -t leader.")
        return GENERIC["partition"].inject(lab, target, params)

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        GENERIC["partition"].revert(lab, injection)


class ReplicaLag:
    name = "replica_lag"
    description = (
        "hold back what a replica dials to the primary (its replication link, and its "
        "sentinel's link to the primary) through the delay proxy: it falls behind, or cannot "
        "finish its handshake and its link stays down"
    )
    params: Mapping[str, tuple[str, str]] = {"ms": ("4000", "milliseconds added each way")}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        primary, replica = _primary(lab), _server(lab, target)
        if primary.name == replica.name:
            raise UsageError(f"{target} is the primary", hint="Target a replica: -t follower.")
        delay = int(number(params, "ms", 1, 60_000))
        return delay_traffic(lab, target, self.name, delay, inbound=False, toward=[primary])

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        undelay(injection)


class SentinelQuorum:
    name = "sentinel_quorum"
    description = "stop a majority of the sentinels (not the primary's own), so none can fail over"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        # The primary's own sentinel stays: alone, it sees the primary but decides nothing.
        beside = sentinel_of(_primary(lab).name)
        every = sentinels(lab.cluster)
        chosen = [s.name for s in every if s.name != beside][: quorum(len(every))]
        return {"stopped": stop_nodes(lab, chosen)}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        start_nodes(lab, injection.state["stopped"])


REDIS_ERRORS = (redis.RedisError, OSError)


class AuthChanged:
    name = "auth_changed"
    description = (
        "set a password on every server (saved in its config, replication kept working) and "
        "drop the clients' connections: clients without it are refused"
    )
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        password = secrets.token_hex(8)
        try:
            for node in servers(lab.cluster):
                with connect(node, TIMEOUT) as client:
                    client.config_set("masterauth", password)
            for node in servers(lab.cluster):
                with connect(node, TIMEOUT) as client:
                    client.config_set("requirepass", password)
                    client.config_rewrite()
                    client.client_kill_filter(_type="normal")
        except REDIS_ERRORS as exc:
            self.revert(lab, Injection(0, self.name, target, {}, "", state={"password": password}))
            raise undone("could not set the password on every server (undone)", exc) from exc
        return {"password": password}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        left = [n.name for n in servers(lab.cluster)
                if not _clear_password(n, injection.state["password"])]  # fmt: skip
        if left:
            raise LabError(f"the password is still set on {', '.join(left)}",
                           hint="Start them and revert again, or reset the lab.")  # fmt: skip


def _clear_password(node: Node, password: str) -> bool:
    """Remove the password, whether it is still set or the agent already removed it."""
    for attempt in (password, None):
        try:
            with connect(node, TIMEOUT, attempt) as client:
                client.config_set("requirepass", "")
                client.config_set("masterauth", "")
                client.config_rewrite()
                return True
        except redis.AuthenticationError:
            continue
        except REDIS_ERRORS:
            return False
    return False


class MaxMemory:
    name = "maxmemory"
    description = (
        "fill the primary with values that never expire, then cap every server's maxmemory "
        "just under what it uses, with noeviction: writes are refused"
    )
    params: Mapping[str, tuple[str, str]] = {"fill_mb": ("8", "MiB of values written first")}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        filled = int(number(params, "fill_mb", 1, 256) * 1024 * 1024) // FILL_VALUE
        blob = secrets.token_hex(FILL_VALUE // 2)
        state: dict[str, Any] = {"before": {}, "filled": filled}
        try:
            with connect(_primary(lab), TIMEOUT) as client:
                for n in range(filled):
                    client.set(f"{FILL_PREFIX}{n}", blob)
                client.wait(len(servers(lab.cluster)) - 1, int(TIMEOUT * 1000))
            for node in servers(lab.cluster):
                with connect(node, TIMEOUT) as each:
                    settings = each.config_get("maxmemory*")
                    state["before"][node.name] = settings
                    limit = int(each.info("memory")["used_memory"]) - FILL_VALUE
                    each.config_set("maxmemory-policy", "noeviction")
                    each.config_set("maxmemory", str(limit))
        except REDIS_ERRORS as exc:
            self.revert(lab, Injection(0, self.name, target, {}, "", state=state))
            raise undone("could not fill the primary and cap every server (undone)", exc) from exc
        return state

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        """Each server's limits back first (so the primary takes the deletes), then the values,
        from whichever server is the primary now."""
        left = []
        for node in servers(lab.cluster):
            try:
                with connect(node, TIMEOUT) as each:
                    for key, value in injection.state["before"].get(node.name, {}).items():
                        each.config_set(key, value)
            except REDIS_ERRORS:
                left.append(node.name)
        keys = [f"{FILL_PREFIX}{i}" for i in range(injection.state["filled"])]
        try:
            with connect(_primary(lab), TIMEOUT) as client:
                client.delete(*keys)
        except (*REDIS_ERRORS, LabError):
            left.append("the primary (its values)")
        if left:
            raise LabError(f"could not undo maxmemory on {', '.join(left)}",
                           hint="Start them and revert again, or reset the lab.")  # fmt: skip


FAULTS: dict[str, Fault] = {
    f.name: f for f in (SplitBrain(), ReplicaLag(), SentinelQuorum(), AuthChanged(), MaxMemory())
}
