"""Load on the rate limiter: known keys with known limits, spread over the nodes, and a
record of how many requests each key was allowed in each window.

A request counts toward a window for certain only when it was both sent and answered inside
that window; the node's decision happened in between. If the certain admissions of a key in
one window exceed its declared limit, the limiter over-admitted: no timing can explain it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from typing import Any

import httpx

from operator_ai.core import Cluster, Report, Stopping
from operator_ai.lab.load import MAX_IN_FLIGHT, LoadStats, drive
from operator_ai.subjects.ratelimiter.declared import REDIS, declared

TIMEOUT = 2.0
KEEP_SECONDS = 60.0


class Windows:
    """Admissions per key and window: all of them (by answer time), and the certain ones."""

    def __init__(self, limits: dict[str, dict[str, int]]) -> None:
        self.limits = limits
        self.counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self.over: list[dict[str, Any]] = []
        self.judged = 0
        self.fullest: dict[str, float] = {}  # per key: the most certain admissions / limit

    def allowed(self, key: str, sent: float, answered: float) -> None:
        width = self.limits[key]["window_ms"] / 1000
        window = int(answered // width)
        counts = self.counts[key, window]
        counts[0] += 1
        if int(sent // width) == window:
            counts[1] += 1

    def close(self, now: float) -> None:
        """Judge every window that has ended, then forget it."""
        for (key, window), (allowed, certain) in list(self.counts.items()):
            width = self.limits[key]["window_ms"] / 1000
            if (window + 1) * width > now:
                continue
            del self.counts[key, window]
            self.judged += 1
            share = certain / self.limits[key]["limit"]
            self.fullest[key] = max(share, self.fullest.get(key, 0.0))
            if certain > self.limits[key]["limit"]:
                self.over.append({
                    "key": key, "window_start": window * width, "window_end": (window + 1) * width,
                    "allowed": allowed, "certain": certain, "limit": self.limits[key]["limit"],
                })  # fmt: skip
        self.over = [o for o in self.over if now - o["window_end"] <= KEEP_SECONDS]


async def _run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    limits = declared(cluster.workdir)
    stats = LoadStats(cluster.workdir / "load.json", "ratelimiter", rate)
    windows = Windows(limits)
    nodes = [n.url("http") for n in cluster.nodes if n.name != REDIS]
    endpoints = itertools.cycle(nodes)
    keys = itertools.cycle(sorted(limits))
    answers = {"allowed": 0, "denied": 0}

    async def check(n: int) -> None:
        key = next(keys)
        sent = time.time()
        why = "no node"
        try:
            for _ in nodes:  # a client with several nodes moves on when one does not answer
                try:
                    response = await client.post(f"{next(endpoints)}/check", json={"key": key})
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    why = f"connect: {exc}"
                    continue
                answered = time.time()
                if response.status_code in (200, 429):
                    stats.ok((answered - sent) * 1000)
                    allowed = response.status_code == 200
                    answers["allowed" if allowed else "denied"] += 1
                    if allowed:
                        windows.allowed(key, sent, answered)
                else:
                    stats.error(f"HTTP {response.status_code}: {response.text[:160]}")
                return
            stats.error(why)
        except httpx.HTTPError as exc:
            stats.error(f"{type(exc).__name__}: {exc}")

    def publish() -> None:
        windows.close(time.time())
        stats.extra = {
            "answers": dict(answers),
            "windows_judged": windows.judged,
            "fullest_window": {k: round(v, 3) for k, v in windows.fullest.items()},
            "over_admissions": windows.over,
        }
        report(stats.write())

    pool = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False, limits=pool) as client:
        await drive(rate, duration, check, publish, stop)


def run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    asyncio.run(_run(cluster, rate, duration, report, stop))
