"""The node registry's writer: one entry per node, rewritten every interval until the node
stops, so the registry lists exactly the nodes that are alive."""

from __future__ import annotations

import asyncio
import logging
import time

from operator_ai.subjects.ratelimiter.service.errors import RedisFailed
from operator_ai.subjects.ratelimiter.service.metrics import Metrics
from operator_ai.subjects.ratelimiter.service.store import LimiterStore

log = logging.getLogger(__name__)


def node_clock_ms() -> int:
    """This node's wall clock in ms: the only clock a node decides with."""
    return int(time.time() * 1000)


async def keep_registered(
    store: LimiterStore,
    metrics: Metrics,
    node: str,
    address: str,
    started_at: int,
    interval_s: float,
) -> None:
    """Write the registry entry every ``interval_s`` until cancelled; survive Redis outages."""
    interval_ms = max(1, round(interval_s * 1000))
    failing = False
    next_beat = time.monotonic()
    while True:
        try:
            await store.heartbeat(node, address, started_at, node_clock_ms(), interval_ms)
        except RedisFailed as exc:
            metrics.redis_error()
            if not failing:
                log.warning("heartbeat failed, the node drops out of the registry: %s", exc)
            failing = True
        else:
            metrics.heartbeat_written()
            if failing:
                log.info("heartbeat restored, the node is registered again")
            failing = False
        # A fixed schedule, so a slow write does not stretch the interval; after a stall
        # (the process was paused) beat once, without catching up on the missed beats.
        next_beat = max(next_beat + interval_s, time.monotonic())
        await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
