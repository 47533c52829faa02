"""Redis with Sentinel's own faults. Killing, stopping or pausing a server or a sentinel is
the lab's generic `kill`, `stop` and `pause` (`-t redis1`, `-t sentinel2`, `-t leader` for
the primary); a network fault on either strikes both, as they share a host."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from typing import Any

import redis

from operator_ai.core import CLUSTER, MODES, NETNS, NODE, Fault, Injection, LabHandle, Node
from operator_ai.errors import LabError, UsageError
from operator_ai.lab.faults import GENERIC, delay_traffic, number, undelay
from operator_ai.subjects.redis.nodes import SENTINEL, SERVER, connect, quorum, sentinels, servers

TIMEOUT = 5.0
FILL_VALUE = 256 * 1024
FILL_PREFIX = "cache:blob:"


def _server(lab: LabHandle, target: str) -> Node:
    node = lab.cluster.node(target)
    if node not in servers(lab.cluster):
        raise UsageError(f"{target} is not a Redis server", hint="Target redis1, redis2...")
    return node


def _primary(lab: LabHandle) -> Node:
    name = lab.leader()
    if name is None:
        raise LabError("the sentinels name no primary now", hint="Try again after a failover.")
    return lab.cluster.node(name)


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
        "sentinel's link to the primary) through the delay proxy, so it falls behind"
    )
    params: Mapping[str, tuple[str, str]] = {"ms": ("4000", "milliseconds added each way")}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        primary, replica = _primary(lab), _server(lab, target)
        if primary.name == replica.name:
            raise UsageError(f"{target} is the primary", hint="Target a replica: -t follower.")
        delay = int(number(params, "ms", 1, 60_000))
        return delay_traffic(lab, target, self.name, delay, False, [primary])

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
        beside = _primary(lab).name.replace(SERVER, SENTINEL, 1)
        every = sentinels(lab.cluster)
        chosen = [s.name for s in every if s.name != beside][: quorum(len(every))]
        for name in chosen:
            lab.cluster.control.stop(name)
        return {"stopped": chosen}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        for name in injection.state["stopped"]:
            lab.cluster.control.start(name)


def _config_set(client: redis.Redis, **settings: str) -> None:
    for key, value in settings.items():
        client.config_set(key.replace("_", "-"), value)


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
        for node in servers(lab.cluster):
            with connect(node, TIMEOUT) as client:
                _config_set(client, masterauth=password)
        for node in servers(lab.cluster):
            with connect(node, TIMEOUT) as client:
                _config_set(client, requirepass=password)
                client.config_rewrite()
                client.client_kill_filter(_type="normal")
        return {"password": password}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        for node in servers(lab.cluster):
            _clear_password(node, injection.state["password"])


def _clear_password(node: Node, password: str) -> None:
    """Remove the password, whether it is still set or the agent already removed it."""
    for attempt in (password, None):
        try:
            with connect(node, TIMEOUT, attempt) as client:
                _config_set(client, requirepass="", masterauth="")
                client.config_rewrite()
                return
        except (redis.AuthenticationError, redis.ResponseError):
            continue


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
        with connect(_primary(lab), TIMEOUT) as client:
            for n in range(filled):
                client.set(f"{FILL_PREFIX}{n}", blob)
            client.wait(len(servers(lab.cluster)) - 1, int(TIMEOUT * 1000))
        before = {}
        for node in servers(lab.cluster):
            with contextlib.suppress(redis.RedisError, OSError), connect(node, TIMEOUT) as each:
                settings = each.config_get("maxmemory*")
                limit = int(each.info("memory")["used_memory"]) - FILL_VALUE
                _config_set(each, maxmemory=str(limit), maxmemory_policy="noeviction")
                before[node.name] = settings
        return {"before": before, "filled": filled}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        keys = [f"{FILL_PREFIX}{i}" for i in range(injection.state["filled"])]
        with connect(_primary(lab), TIMEOUT) as client:
            if keys:
                client.delete(*keys)
        for node in servers(lab.cluster):
            before = injection.state["before"].get(node.name, {})
            with contextlib.suppress(redis.RedisError, OSError), connect(node, TIMEOUT) as each:
                _config_set(each, **{k.replace("-", "_"): v for k, v in before.items()})


FAULTS: dict[str, Fault] = {
    f.name: f for f in (SplitBrain(), ReplicaLag(), SentinelQuorum(), AuthChanged(), MaxMemory())
}
