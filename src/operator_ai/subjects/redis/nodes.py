"""What a Redis lab is made of: servers (`redisN`) and sentinels (`sentinelN`), each sentinel
beside its server, and how a client reaches either."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from operator_ai.core import Cluster, Node

SERVER = "redis"
SENTINEL = "sentinel"
"""The port names, and the prefixes of the node names."""
MASTER = "lab"
"""The name the sentinels monitor the primary under."""
SERVER_PORT = 6379
SENTINEL_PORT = 26379


def servers(cluster: Cluster) -> list[Node]:
    return [n for n in cluster.nodes if SERVER in n.ports]


def sentinels(cluster: Cluster) -> list[Node]:
    return [n for n in cluster.nodes if SENTINEL in n.ports]


def sentinel_of(server: str) -> str:
    """The sentinel beside a server: `sentinel2` beside `redis2`."""
    return server.replace(SERVER, SENTINEL, 1)


def quorum(count: int) -> int:
    """The sentinels that must agree a primary is down: a majority."""
    return count // 2 + 1


def endpoint(node: Node) -> tuple[str, int]:
    port = SERVER if SERVER in node.ports else SENTINEL
    return node.address, node.ports[port]


def fail_fast(timeout: float) -> dict[str, Any]:
    """Client options that fail fast: no retries, short timeouts (sync or asyncio)."""
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0), "decode_responses": True}  # fmt: skip


def connect(node: Node, timeout: float, password: str | None = None) -> redis.Redis:
    """A client for one server or sentinel that fails fast."""
    host, port = endpoint(node)
    return redis.Redis(host=host, port=port, password=password, **fail_fast(timeout))


def newest(views: Iterable[tuple[int, str]]) -> str | None:
    """Of the sentinels' views (config epoch, the primary's host:port), what the newest one
    names: Sentinel's own rule for which failover won."""
    found = max(views, key=lambda view: view[0], default=None)
    return found[1] if found else None


def by_address(nodes: Sequence[Node], host: str, port: int) -> Node | None:
    """The server at ``host:port``, as a sentinel or a replica line names it."""
    return next((n for n in nodes if endpoint(n) == (host, int(port))), None)
