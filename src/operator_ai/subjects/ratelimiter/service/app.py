"""The HTTP API of one rate limiter node: checks, health, metrics and administration.

Every decision is made in Redis, so any node can answer for any key. When Redis cannot be
reached a check is refused with 503: the limiter fails closed, never open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from operator_ai.subjects.ratelimiter.service.errors import RedisFailed, RedisUnavailable
from operator_ai.subjects.ratelimiter.service.heartbeat import keep_registered, node_clock_ms
from operator_ai.subjects.ratelimiter.service.limits import DeclaredLimits, Key, Limit, Source
from operator_ai.subjects.ratelimiter.service.metrics import CONTENT_TYPE, Metrics, Result
from operator_ai.subjects.ratelimiter.service.store import Counter, LimiterStore

log = logging.getLogger(__name__)

# Admin views peek at this many keys at once; each peek is one round trip to Redis.
PEEK_CONCURRENCY = 32

KeyParam = Annotated[str, PathParam(min_length=1, max_length=256)]


@dataclass(frozen=True)
class NodeConfig:
    """Everything one node is started with."""

    node_id: str
    redis_url: str
    limits_path: Path
    declared: DeclaredLimits
    advertise: str
    heartbeat_s: float = 1.0


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Key


class Service:
    """The handlers, around one store and one set of metrics."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node = config.node_id
        self.store = LimiterStore(config.redis_url, config.declared)
        self.metrics = Metrics(config.node_id)
        self.started_at = node_clock_ms()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        beat = asyncio.create_task(
            keep_registered(
                self.store,
                self.metrics,
                self.node,
                self.config.advertise,
                self.started_at,
                self.config.heartbeat_s,
            )
        )
        log.info("node %s starting; Redis %s", self.node, _redacted(self.config.redis_url))
        try:
            yield
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            # A node that stops cleanly leaves the registry at once instead of expiring.
            with contextlib.suppress(RedisFailed):
                await self.store.forget_node(self.node)
            await self.store.aclose()

    async def check(self, body: CheckRequest) -> JSONResponse:
        """Admit (200) or deny (429) one request for ``key``; 503 if Redis cannot decide."""
        started = time.perf_counter()
        now_ms = node_clock_ms()
        try:
            decision = await self.store.check(body.key, now_ms, f"{self.node}:{uuid.uuid4().hex}")
        except RedisFailed as exc:
            self.metrics.redis_error()
            self.metrics.check(Result.ERROR, time.perf_counter() - started)
            return JSONResponse({"error": str(exc), "node": self.node}, status_code=503)
        result = Result.ALLOWED if decision.allowed else Result.DENIED
        response = JSONResponse(
            {
                "allowed": decision.allowed,
                "key": body.key,
                "node": self.node,
                "limit": decision.limit,
                "window_ms": decision.window_ms,
                "source": decision.source.value,
                "count": decision.count,
                "remaining": max(0, decision.limit - decision.count),
                "now_ms": now_ms,
                "redis_ms": decision.redis_ms,
            },
            status_code=200 if decision.allowed else 429,
        )
        self.metrics.check(result, time.perf_counter() - started)
        return response

    async def health(self) -> JSONResponse:
        """200 when Redis answers PING in time, else 503 with the reason."""
        try:
            await self.store.ping()
        except RedisFailed as exc:
            self.metrics.redis_error()
            body = {"status": "unhealthy", "node": self.node, "redis": str(exc)}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ok", "node": self.node, "redis": "ok"})

    async def metrics_text(self) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def nodes(self) -> dict[str, Any]:
        """The registry: nodes whose entry has not expired."""
        entries = await self.store.nodes()
        return {
            "nodes": [
                {
                    "node": e.node,
                    "address": e.address,
                    "started_at": e.started_at,
                    "heartbeat_ms": e.heartbeat_ms,
                    "interval_ms": e.interval_ms,
                    "age_ms": e.age_ms,
                    "skew_ms": e.skew_ms,
                    "alive": e.alive,
                }
                for e in entries
            ]
        }

    async def limits(self) -> dict[str, Any]:
        """Declared limits, and the effective limit of every declared or overridden key."""
        declared = self.config.declared
        overrides = await self.store.overrides()
        effective = {}
        for key in sorted(set(declared.keys) | set(overrides)):
            if key in overrides:
                limit, source = overrides[key], Source.OVERRIDE
            else:
                limit, source = declared.for_key(key)
            effective[key] = _limit_body(limit, source)
        return {
            "file": str(self.config.limits_path),
            "declared": declared.model_dump(),
            "effective": effective,
        }

    async def set_limit(self, key: KeyParam, body: Limit) -> dict[str, Any]:
        """Override the limit of ``key`` (for 24 h, renewed by setting it again)."""
        await self.store.set_override(key, body)
        log.info("override %s: %d per %d ms", key, body.limit, body.window_ms)
        return {"key": key, **_limit_body(body, Source.OVERRIDE)}

    async def delete_limit(self, key: KeyParam) -> dict[str, Any]:
        """Remove the override of ``key``; its declared limit applies again."""
        removed = await self.store.delete_override(key)
        if removed:
            log.info("override %s removed", key)
        limit, source = self.config.declared.for_key(key)
        return {"key": key, "removed": removed, **_limit_body(limit, source)}

    async def counter(self, key: KeyParam) -> dict[str, Any]:
        """How many requests the current window of ``key`` holds, by this node's clock."""
        now_ms = node_clock_ms()
        return self._counter_body(await self.store.peek(key, now_ms), now_ms)

    async def counters(self) -> dict[str, Any]:
        """Counters of every declared or overridden key. A key Redis cannot count (say its
        log has the wrong type) is listed with its error instead."""
        now_ms = node_clock_ms()
        keys = set(self.config.declared.keys) | set(await self.store.overrides())
        found = await self._peek_all(sorted(keys), now_ms)
        return {
            "counters": [
                self._counter_body(c, now_ms)
                if isinstance(c, Counter)
                else {"key": key, "error": str(c), "now_ms": now_ms, "node": self.node}
                for key, c in found
            ]
        }

    async def reset_counter(self, key: KeyParam) -> dict[str, Any]:
        """Forget the window of ``key``: its next request starts from zero."""
        deleted = await self.store.reset(key)
        log.info("counter %s reset", key)
        return {"key": key, "deleted": deleted}

    async def blocks(self) -> dict[str, Any]:
        """Keys at or over their effective limit right now, and keys whose checks fail
        (they are refused too)."""
        now_ms = node_clock_ms()
        keys = (
            set(await self.store.logged_keys())
            | set(await self.store.overrides())
            | set(self.config.declared.keys)
        )
        blocked: list[dict[str, Any]] = []
        for key, c in await self._peek_all(sorted(keys), now_ms):
            if not isinstance(c, Counter):
                blocked.append({"key": key, "error": str(c)})
            elif c.count >= c.limit:
                blocked.append(
                    {"key": key, "count": c.count, "limit": c.limit, "window_ms": c.window_ms}
                )
        return {"blocked": blocked}

    async def _peek_all(
        self, keys: list[str], now_ms: int
    ) -> list[tuple[str, Counter | RedisFailed]]:
        """Peek at each key; a per-key failure is returned, an unreachable Redis raised."""
        found: list[tuple[str, Counter | RedisFailed]] = []
        for start in range(0, len(keys), PEEK_CONCURRENCY):
            chunk = keys[start : start + PEEK_CONCURRENCY]
            results = await asyncio.gather(
                *(self.store.peek(k, now_ms) for k in chunk), return_exceptions=True
            )
            for key, result in zip(chunk, results, strict=True):
                if isinstance(result, RedisUnavailable) or not isinstance(
                    result, Counter | RedisFailed
                ):
                    raise result
                found.append((key, result))
        return found

    def _counter_body(self, counter: Counter, now_ms: int) -> dict[str, Any]:
        return {
            "key": counter.key,
            "count": counter.count,
            "limit": counter.limit,
            "window_ms": counter.window_ms,
            "source": counter.source.value,
            "now_ms": now_ms,
            "node": self.node,
        }

    async def on_redis_failed(self, request: Request, exc: Exception) -> JSONResponse:
        self.metrics.redis_error()
        hint = getattr(exc, "hint", "")
        return JSONResponse({"error": str(exc), "hint": hint, "node": self.node}, status_code=503)


def _redacted(url: str) -> str:
    """``url`` without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _limit_body(limit: Limit, source: Source) -> dict[str, Any]:
    return {"limit": limit.limit, "window_ms": limit.window_ms, "source": source.value}


def create_app(config: NodeConfig) -> FastAPI:
    """One node's application; nothing touches Redis until the app starts."""
    service = Service(config)
    app = FastAPI(
        title=f"rate limiter {config.node_id}",
        lifespan=service.lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.add_exception_handler(RedisFailed, service.on_redis_failed)
    route = app.add_api_route
    route("/check", service.check, methods=["POST"])
    route("/health", service.health, methods=["GET"])
    route("/metrics", service.metrics_text, methods=["GET"])
    route("/admin/nodes", service.nodes, methods=["GET"])
    route("/admin/limits", service.limits, methods=["GET"])
    route("/admin/limits/{key:path}", service.set_limit, methods=["PUT"])
    route("/admin/limits/{key:path}", service.delete_limit, methods=["DELETE"])
    route("/admin/counters", service.counters, methods=["GET"])
    route("/admin/counters/{key:path}", service.counter, methods=["GET"])
    route("/admin/counters/{key:path}", service.reset_counter, methods=["DELETE"])
    route("/admin/blocks", service.blocks, methods=["GET"])
    return app
