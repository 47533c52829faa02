"""Client-side workload stats, shared by every subject's load generator.

A generator records each request's latency or error; once a second the stats are written
to the lab's `load.json`, which the monitor reads for `workload_errors` and the dashboard
for its sparkline. The file is replaced atomically, so readers never see half of it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operator_ai.core import Report, Stopping
from operator_ai.lab.state import write_json

DEFAULT_RATE = 50.0
"""Operations a second a load generator drives unless told otherwise."""
MAX_IN_FLIGHT = 256
"""Requests a generator has out at once; its client's connection pool is as large, so a
request never waits for a connection (a pool queue costs CPU the generator needs)."""
STOP_CHECK_SECONDS = 0.25
"""How long a generator waiting for its next request goes without looking at its stop."""
WINDOW_SECONDS = 10
SERIES_SECONDS = 60
FRESH_SECONDS = 5.0


@dataclass
class _Second:
    at: int
    ops: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def _p99(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)


class LoadStats:
    def __init__(self, path: Path, subject: str, rate: float) -> None:
        self.path = path
        self.subject = subject
        self.rate = rate
        self.started_at = time.time()
        self.ops = 0
        self.errors = 0
        self.last_error: str | None = None
        self.extra: dict[str, Any] = {}  # a subject's own figures, written alongside
        self._seconds: deque[_Second] = deque(maxlen=SERIES_SECONDS)

    def _current(self) -> _Second:
        now = int(time.time())
        if not self._seconds or self._seconds[-1].at != now:
            self._seconds.append(_Second(now))
        return self._seconds[-1]

    def ok(self, latency_ms: float) -> None:
        second = self._current()
        second.ops += 1
        second.latencies.append(latency_ms)
        self.ops += 1

    def error(self, why: str) -> None:
        second = self._current()
        second.ops += 1
        second.errors += 1
        self.ops += 1
        self.errors += 1
        self.last_error = why

    def snapshot(self) -> dict[str, Any]:
        now = int(time.time())
        # The current second is still filling; the window is the last complete seconds.
        recent = [s for s in self._seconds if now - WINDOW_SECONDS <= s.at < now]
        return {
            "subject": self.subject,
            "rate": self.rate,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "ops": self.ops,
            "errors": self.errors,
            "last_error": self.last_error,
            "window": {
                "seconds": WINDOW_SECONDS,
                "ops": sum(s.ops for s in recent),
                "errors": sum(s.errors for s in recent),
                "p99_ms": _p99([lat for s in recent for lat in s.latencies]),
            },
            "series": [
                {"at": s.at, "ops": s.ops, "errors": s.errors, "p99_ms": _p99(s.latencies)}
                for s in self._seconds
                if s.at < now
            ],
            **self.extra,
        }

    def write(self) -> dict[str, Any]:
        snapshot = self.snapshot()
        write_json(self.path, snapshot)
        return snapshot


ERROR_SHARE = 0.05
ERROR_MIN_OPS = 10


def workload_breach(workload: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """What breaks `workload_errors`, every subject's: more than 5% of the last window's
    client requests (at least 10 of them) failed. The message and the evidence, or None."""
    window = (workload or {}).get("window", {})
    ops, errors = window.get("ops", 0), window.get("errors", 0)
    if ops < ERROR_MIN_OPS or errors / ops <= ERROR_SHARE:
        return None
    message = (
        f"{errors} of {ops} client requests failed in the last {window.get('seconds', '?')} s: "
        f"{(workload or {}).get('last_error')}"
    )
    return message, {"ops": ops, "errors": errors, "p99_ms": window.get("p99_ms")}


def lost_breach(workload: dict[str, Any] | None, lost: str) -> tuple[str, dict[str, Any]] | None:
    """What breaks `lost_writes`: the load's checker (a ``Ledger``) found acknowledged writes
    gone in its last window; ``lost`` says what and from where ("commits ... from the
    primary"). The message and the evidence, or None."""
    writes = (workload or {}).get("writes", {})
    if not writes.get("lost_recent"):
        return None
    message = (
        f"{writes['lost_recent']} acknowledged {lost} in the last {writes['lost_window']} s "
        f"({writes['lost']} since the load started)"
    )
    return message, {"lost_recent": writes["lost_recent"], "lost": writes["lost"],
                     "examples": writes.get("lost_examples", [])[-5:]}  # fmt: skip


TRACK_SECONDS = 120.0
TRACK_MAX = 20_000
"""The acknowledged writes a checker keeps reading back: the last two minutes', at most."""
CHECK_AFTER = 0.5
"""A write is read back once it is this old, so one still replicating is not yet counted."""
LOST_WINDOW = 60
LOST_KEPT = 1000


class Ledger:
    """The acknowledged writes still tracked, and the ones found lost."""

    def __init__(self) -> None:
        self.acked: OrderedDict[int, tuple[float, str]] = OrderedDict()
        self.total = 0
        self.acked_by: dict[str, int] = {}
        self.lost: deque[dict[str, Any]] = deque(maxlen=LOST_KEPT)
        self.lost_total = 0
        self.found_at: deque[float] = deque()
        self.suspect: set[int] = set()
        self.checked_at: float | None = None

    def ack(self, seq: int, by: str) -> None:
        self.total += 1
        self.acked_by[by] = self.acked_by.get(by, 0) + 1
        self.acked[seq] = (time.time(), by)
        while len(self.acked) > TRACK_MAX:
            self.acked.popitem(last=False)

    def due(self) -> list[int]:
        now = time.time()
        while self.acked and now - next(iter(self.acked.values()))[0] > TRACK_SECONDS:
            self.acked.popitem(last=False)
        self.suspect.intersection_update(self.acked)
        return [seq for seq, (at, _) in self.acked.items() if now - at >= CHECK_AFTER]

    def seen(self, seq: int, held: bool) -> None:
        """What one check found of a write. Missing from every server that answered on two
        checks in a row, it is lost: one server too slow to answer once proves nothing."""
        if held:
            self.suspect.discard(seq)
        elif seq not in self.suspect:
            self.suspect.add(seq)
        elif seq in self.acked:  # not dropped from tracking while the check ran
            self.suspect.discard(seq)
            self._lost(seq)

    def _lost(self, seq: int) -> None:
        acked_at, by = self.acked.pop(seq)
        self.lost_total += 1
        self.found_at.append(time.time())
        self.lost.append({"seq": seq, "acked_at": round(acked_at, 3), "by": by,
                          "found_at": round(time.time(), 3)})  # fmt: skip

    def stats(self) -> dict[str, Any]:
        now = time.time()
        while self.found_at and now - self.found_at[0] > LOST_WINDOW:
            self.found_at.popleft()
        return {
            "acked": self.total,
            "acked_by": dict(self.acked_by),
            "tracked": len(self.acked),
            "checked_at": self.checked_at,
            "lost": self.lost_total,
            "lost_recent": len(self.found_at),
            "lost_window": LOST_WINDOW,
            "lost_examples": list(self.lost)[-20:],
            "lost_seqs": [w["seq"] for w in self.lost],
        }


def read_workload(lab_dir: Path) -> dict[str, Any] | None:
    """The load generator's stats, or None when no generator wrote them lately."""
    try:
        stats: dict[str, Any] = json.loads((lab_dir / "load.json").read_text())
    except (OSError, ValueError):
        return None
    if time.time() - float(stats.get("updated_at", 0)) > FRESH_SECONDS:
        return None
    return stats


async def drive(
    rate: float,
    duration: float | None,
    request: Callable[[int], Awaitable[None]],
    publish: Callable[[], None],
    stop: Stopping,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> None:
    """Start ``request(n)`` at ``rate`` a second (open loop, at most ``max_in_flight`` at
    once) for ``duration`` seconds or until ``stop`` is set or the task is cancelled;
    ``publish`` once a second and at the end."""
    slots = asyncio.Semaphore(max_in_flight)

    async def one(n: int) -> None:
        try:
            await request(n)
        finally:
            slots.release()

    async def publisher() -> None:
        while True:
            await asyncio.sleep(1.0)
            publish()

    publishing = asyncio.create_task(publisher())
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    try:
        for n in itertools.count():
            due = start + n / rate
            if duration is not None and due - start >= duration:
                break
            while not stop.is_set() and (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(min(wait, STOP_CHECK_SECONDS))
            if stop.is_set():
                break
            await slots.acquire()
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    finally:
        publishing.cancel()
        publish()


CHECK_EVERY = 2.0
"""How often a load's checker reads its acknowledged writes back."""


async def drive_checked(
    stats: LoadStats,
    ledger: Ledger,
    run: str,
    rate: float,
    duration: float | None,
    request: Callable[[int], Awaitable[None]],
    check: Callable[[], Awaitable[None]],
    report: Report,
    stop: Stopping,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> None:
    """``drive`` a load that records its acknowledged writes in ``ledger``, with ``check``
    reading them back every ``CHECK_EVERY`` seconds beside it; the ledger's figures are
    published with the load's, as ``writes``."""

    async def checker() -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            await check()

    def publish() -> None:
        stats.extra["writes"] = {"run": run, **ledger.stats()}
        report(stats.write())

    checking = asyncio.create_task(checker())
    try:
        await drive(rate, duration, request, publish, stop, max_in_flight)
    finally:
        checking.cancel()
