"""The rate limiter's own faults. Killing or pausing a node or Redis, and skewing a node's
clock, are the lab's generic `kill`, `pause` and `clock_skew` (`-t rl2`, `-t redis`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
import redis

from operator_ai.core import CLUSTER, MODES, NETNS, NODE, Fault, Injection, LabHandle
from operator_ai.errors import LabError
from operator_ai.lab.faults import drop_rules, drop_table
from operator_ai.subjects.ratelimiter.declared import REDIS, declared

DEFAULT_KEY = "user:bob"


def _key(lab: LabHandle, target: str) -> str:
    key = DEFAULT_KEY if target == CLUSTER else target
    keys = declared(lab.path)
    if key not in keys:
        raise LabError(f"{key!r} is not a declared key", hint=f"Keys: {', '.join(keys)}.")
    return key


def _redis(lab: LabHandle) -> redis.Redis:
    node = lab.cluster.node(REDIS)
    return redis.Redis(host=node.address, port=node.ports["redis"], socket_timeout=5)


class CorruptCounter:
    name = "corrupt_counter"
    description = (
        "write bogus entries, scored far in the future, into a key's window log in Redis "
        "(-t KEY): nodes count them, so the key is denied and its count drifts from the truth"
    )
    params: Mapping[str, tuple[str, str]] = {
        "entries": ("200", "bogus entries to write"),
        "ahead": ("3600", "how many seconds in the future they are scored"),
    }
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        key, entries, ahead = _key(lab, target), int(params["entries"]), float(params["ahead"])
        score = time.time() * 1000 + ahead * 1000
        members = {f"corrupt:{n}": score for n in range(entries)}
        with _redis(lab) as client:
            client.zadd(f"rl:log:{key}", members)
            client.pexpire(f"rl:log:{key}", int(ahead * 1000))
        return {"key": key, "entries": entries}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        key, entries = injection.state["key"], injection.state["entries"]
        with _redis(lab) as client:
            client.zrem(f"rl:log:{key}", *[f"corrupt:{n}" for n in range(entries)])


class WrongLimit:
    name = "wrong_limit"
    description = "override a key's limit through the management API (-t KEY)"
    params: Mapping[str, tuple[str, str]] = {
        "limit": ("0", "the wrong limit (0: ten times the declared one)")
    }
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        key = _key(lab, target)
        limit = declared(lab.path)[key]
        wrong = int(params["limit"]) or 10 * limit["limit"]
        _admin(
            lab, "PUT", f"/admin/limits/{key}", {"limit": wrong, "window_ms": limit["window_ms"]}
        )
        return {"key": key, "limit": wrong}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        _admin(lab, "DELETE", f"/admin/limits/{injection.state['key']}")


def _admin(lab: LabHandle, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    """Call the management API on the first node that takes the call."""
    errors = []
    with httpx.Client(timeout=5, trust_env=False) as client:
        for node in lab.cluster.nodes:
            if node.name == REDIS:
                continue
            try:
                response = client.request(method, f"{node.url('http')}{path}", json=body)
            except httpx.HTTPError as exc:
                errors.append(f"{node.name}: {exc}")
                continue
            if response.status_code < 300:
                return
            errors.append(f"{node.name}: HTTP {response.status_code} {response.text[:120]}")
    raise LabError(f"{method} {path} failed on every node: {'; '.join(errors)}")


class RedisPartition:
    name = "redis_partition"
    description = "cut one node off from Redis (nft rules in the node's namespace)"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        if target == REDIS:
            raise LabError("redis_partition cuts a node off from Redis; name a node, not Redis")
        address = lab.cluster.node(REDIS).address
        return drop_rules(
            lab, target, self.name, f"ip saddr {address} drop;", f"ip daddr {address} drop;"
        )

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        drop_table(injection.state["netns"], injection.state["table"])


FAULTS: dict[str, Fault] = {f.name: f for f in (CorruptCounter(), WrongLimit(), RedisPartition())}
