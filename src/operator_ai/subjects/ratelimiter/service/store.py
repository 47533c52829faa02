"""The one seam between the service and Redis: every key it reads or writes, and the
translation of redis-py's errors into ours.

Key layout (every key written carries a TTL):

    rl:log:{key}      sorted set, the sliding-window log; score = node clock in ms
    rl:limit:{key}    hash {limit, window_ms}: an override set through the admin API
    rl:node:{node}    hash {node, address, started_at, heartbeat_ms, interval_ms, redis_ms}

Errors (see ``errors``): ``RedisFailed`` (Redis answered with an error, e.g. a key of the
wrong type) and its subclass ``RedisUnavailable`` (no answer in time); callers fail closed
on both. A URL redis-py cannot parse is ``InvalidConfig``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from operator_ai.subjects.ratelimiter.service import scripts
from operator_ai.subjects.ratelimiter.service.errors import (
    InvalidConfig,
    RedisFailed,
    RedisUnavailable,
)
from operator_ai.subjects.ratelimiter.service.limits import DeclaredLimits, Limit, Source

PREFIX = "rl:"
LOG_PREFIX = f"{PREFIX}log:"
LIMIT_PREFIX = f"{PREFIX}limit:"
NODE_PREFIX = f"{PREFIX}node:"
# Log entries outlive their window by this much, so a node whose clock lags a little still
# sees them; the log's TTL is window + margin.
MARGIN_MS = 1000
OVERRIDE_TTL_MS = 24 * 3600 * 1000
SCAN_BATCH = 500


@dataclass(frozen=True)
class Decision:
    """The outcome of one check, as Redis recorded it."""

    allowed: bool
    count: int
    limit: int
    window_ms: int
    source: Source
    redis_ms: int


@dataclass(frozen=True)
class Counter:
    """How many requests the window of ``key`` holds, seen from one node's clock."""

    key: str
    count: int
    limit: int
    window_ms: int
    source: Source


@dataclass(frozen=True)
class NodeEntry:
    """One node's registry entry. ``age_ms`` is measured on Redis's clock, so it reflects
    liveness alone; ``skew_ms`` is how far the node's clock was ahead of Redis's."""

    node: str
    address: str
    started_at: int
    heartbeat_ms: int
    interval_ms: int
    age_ms: int
    skew_ms: int

    @property
    def alive(self) -> bool:
        return self.age_ms < 3 * self.interval_ms


def log_key(key: str) -> str:
    return f"{LOG_PREFIX}{key}"


def limit_key(key: str) -> str:
    return f"{LIMIT_PREFIX}{key}"


def node_key(node: str) -> str:
    return f"{NODE_PREFIX}{node}"


@contextlib.asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise RedisUnavailable(f"Redis unavailable ({what}): {exc}") from exc
    except RedisError as exc:
        raise RedisFailed(f"Redis error ({what}): {exc}") from exc


def _source(overridden: Any, declared: Source) -> Source:
    return Source.OVERRIDE if int(overridden) else declared


class LimiterStore:
    """Sliding-window checks, overrides, counters and the node registry, in one Redis."""

    def __init__(self, url: str, declared: DeclaredLimits, timeout: float = 0.5) -> None:
        self.declared = declared
        try:
            self._redis = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                encoding_errors="replace",
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # One immediate retry on a broken connection (Redis restarted under a pooled
                # connection); never on a timeout, when the script may already have run.
                retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
            )
        except ValueError as exc:
            raise InvalidConfig(
                f"invalid Redis URL {url!r}: {exc}", hint="Use redis://HOST:PORT/DB."
            ) from exc
        self._check = self._redis.register_script(scripts.CHECK)
        self._peek = self._redis.register_script(scripts.PEEK)
        self._heartbeat = self._redis.register_script(scripts.HEARTBEAT)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        async with _translated("PING"):
            await self._redis.ping()

    async def check(self, key: str, now_ms: int, member: str) -> Decision:
        """Record one request for ``key`` at ``now_ms`` if the window has room."""
        declared, source = self.declared.for_key(key)
        args: list[str | int] = [now_ms, member, declared.limit, declared.window_ms, MARGIN_MS]
        async with _translated(f"check {key}"):
            reply = await self._check(keys=[log_key(key), limit_key(key)], args=args)
            allowed, count, limit, window, overridden, sec, usec = (int(x) for x in reply)
        return Decision(
            allowed=bool(allowed),
            count=count,
            limit=limit,
            window_ms=window,
            source=_source(overridden, source),
            redis_ms=sec * 1000 + usec // 1000,
        )

    async def peek(self, key: str, now_ms: int) -> Counter:
        """The count a check of ``key`` at ``now_ms`` would see, recording nothing."""
        declared, source = self.declared.for_key(key)
        args = [now_ms, declared.limit, declared.window_ms]
        async with _translated(f"count {key}"):
            reply = await self._peek(keys=[log_key(key), limit_key(key)], args=args)
            count, limit, window, overridden = (int(x) for x in reply)
        return Counter(key, count, limit, window, _source(overridden, source))

    async def reset(self, key: str) -> bool:
        """Forget every request recorded for ``key``; False if there was none."""
        async with _translated(f"reset {key}"):
            return bool(await self._redis.delete(log_key(key)))

    async def logged_keys(self) -> list[str]:
        """Keys that have a window log in Redis right now."""
        return await self._scan_suffixes(LOG_PREFIX)

    async def overrides(self) -> dict[str, Limit]:
        """Every override currently set. Entries that do not parse are left out."""
        keys = await self._scan_suffixes(LIMIT_PREFIX)
        async with (
            _translated("read overrides"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            for key in keys:
                pipe.hgetall(limit_key(key))
            hashes = await pipe.execute()
        found = {}
        for key, fields in zip(keys, hashes, strict=True):
            with contextlib.suppress(KeyError, ValueError):
                found[key] = Limit(limit=int(fields["limit"]), window_ms=int(fields["window_ms"]))
        return found

    async def set_override(self, key: str, limit: Limit) -> None:
        async with _translated(f"override {key}"), self._redis.pipeline() as pipe:
            pipe.hset(limit_key(key), mapping={"limit": limit.limit, "window_ms": limit.window_ms})
            pipe.pexpire(limit_key(key), OVERRIDE_TTL_MS)
            await pipe.execute()

    async def delete_override(self, key: str) -> bool:
        async with _translated(f"remove override {key}"):
            return bool(await self._redis.delete(limit_key(key)))

    async def heartbeat(
        self, node: str, address: str, started_at: int, now_ms: int, interval_ms: int
    ) -> None:
        """Write this node's registry entry; it expires after three missed heartbeats."""
        args: list[str | int] = [node, address, started_at, now_ms, interval_ms, 3 * interval_ms]
        async with _translated("heartbeat"):
            await self._heartbeat(keys=[node_key(node)], args=args)

    async def forget_node(self, node: str) -> None:
        async with _translated("leave registry"):
            await self._redis.delete(node_key(node))

    async def nodes(self) -> list[NodeEntry]:
        """Registry entries present now, by node name; ages on Redis's clock."""
        names = await self._scan_suffixes(NODE_PREFIX)
        async with (
            _translated("read registry"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            pipe.time()
            for name in names:
                pipe.hgetall(node_key(name))
            (sec, usec), *hashes = await pipe.execute()
        redis_now = int(sec) * 1000 + int(usec) // 1000
        entries = []
        for fields in hashes:
            with contextlib.suppress(KeyError, ValueError):
                entries.append(
                    NodeEntry(
                        node=fields["node"],
                        address=fields["address"],
                        started_at=int(fields["started_at"]),
                        heartbeat_ms=int(fields["heartbeat_ms"]),
                        interval_ms=int(fields["interval_ms"]),
                        age_ms=redis_now - int(fields["redis_ms"]),
                        skew_ms=int(fields["heartbeat_ms"]) - int(fields["redis_ms"]),
                    )
                )
        return sorted(entries, key=lambda e: e.node)

    async def _scan_suffixes(self, prefix: str) -> list[str]:
        async with _translated(f"scan {prefix}*"):
            found = {
                name[len(prefix) :]
                async for name in self._redis.scan_iter(
                    match=f"{_escape(prefix)}*", count=SCAN_BATCH
                )
            }
        return sorted(found)


def _escape(pattern: str) -> str:
    """Quote glob metacharacters so a prefix matches literally."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in pattern)
