"""Client-side workload stats, shared by every subject's load generator.

A generator records each request's latency or error; once a second the stats are written
to the lab's `load.json`, which the monitor reads for `workload_errors` and the dashboard
for its sparkline. The file is replaced atomically, so readers never see half of it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operator_ai.lab.state import write_json

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
        }

    def write(self) -> dict[str, Any]:
        snapshot = self.snapshot()
        write_json(self.path, snapshot)
        return snapshot


def read_workload(lab_dir: Path) -> dict[str, Any] | None:
    """The load generator's stats, or None when no generator wrote them lately."""
    try:
        stats: dict[str, Any] = json.loads((lab_dir / "load.json").read_text())
    except (OSError, ValueError):
        return None
    if time.time() - float(stats.get("updated_at", 0)) > FRESH_SECONDS:
        return None
    return stats
