"""The limits a rate limiter lab declares: the truth the monitor judges the nodes by."""

from __future__ import annotations

import json
from pathlib import Path

REDIS = "redis"
LIMITS = {
    "default": {"limit": 100, "window_ms": 1000},
    "keys": {
        "user:alice": {"limit": 10, "window_ms": 1000},
        "user:bob": {"limit": 20, "window_ms": 1000},
        "tenant:acme": {"limit": 50, "window_ms": 1000},
        "api:search": {"limit": 100, "window_ms": 1000},
    },
}
"""The declared limits the lab starts with (run/limits.json), and the load generator's keys."""


def limits_path(lab_dir: Path) -> Path:
    """The declared limits: the monitor's truth, so root-owned beside the launch scripts,
    where the agent (the lab user) can read them but not rewrite them to clear a ticket."""
    return lab_dir / "run" / "limits.json"


def declared(lab_dir: Path) -> dict[str, dict[str, int]]:
    """Each declared key's limit and window, as the lab's limits file says."""
    data = json.loads(limits_path(lab_dir).read_text())
    return {key: dict(value) for key, value in data["keys"].items()}
