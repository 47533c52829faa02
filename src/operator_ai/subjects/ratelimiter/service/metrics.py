"""The service's Prometheus metrics, in a registry of its own per app."""

from __future__ import annotations

import time
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Fine from 0.5 ms to 1 s, so a p99 can be read off anywhere in that range.
CHECK_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Result(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"


class Metrics:
    """Counters for one node, labelled with its name."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry()
        self._checks = Counter(
            "ratelimiter_checks",
            "Checks decided, by result (error: Redis failed, the request was refused).",
            ["node", "result"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "ratelimiter_check_seconds",
            "Time to answer a check, whatever its result.",
            ["node"],
            buckets=CHECK_BUCKETS,
            registry=self.registry,
        )
        self._redis_errors = Counter(
            "ratelimiter_redis_errors",
            "Redis operations that failed (checks, admin calls, heartbeats, health pings).",
            ["node"],
            registry=self.registry,
        )
        heartbeat_age = Gauge(
            "ratelimiter_heartbeat_age_seconds",
            "Seconds since this node last wrote its registry entry.",
            ["node"],
            registry=self.registry,
        )
        # Label children exist from the start, so a result that never happened reads 0.
        self._by_result = {r: self._checks.labels(node, r.value) for r in Result}
        self._latency_child = self._latency.labels(node)
        self._errors_child = self._redis_errors.labels(node)
        self._last_heartbeat = time.monotonic()
        heartbeat_age.labels(node).set_function(lambda: time.monotonic() - self._last_heartbeat)

    def check(self, result: Result, seconds: float) -> None:
        self._by_result[result].inc()
        self._latency_child.observe(seconds)

    def redis_error(self) -> None:
        self._errors_child.inc()

    def heartbeat_written(self) -> None:
        self._last_heartbeat = time.monotonic()

    def render(self) -> bytes:
        return generate_latest(self.registry)
