"""A steady write load on etcd through its gateway, as a client with endpoint failover."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from operator_ai.lab.load import LoadStats, drive
from operator_ai.lab.state import LabState

KEYS = 1000
VALUE_BYTES = 128
TIMEOUT = 2.0


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def _run(
    lab: LabState,
    lab_dir: Path,
    rate: float,
    duration: float | None,
    report: Callable[[dict[str, Any]], None],
) -> None:
    stats = LoadStats(lab_dir / "load.json", "etcd", rate)
    endpoints = itertools.cycle([n.url() for n in lab.nodes])
    tries = len(lab.nodes)
    value = _b64(os.urandom(VALUE_BYTES))

    async def put(n: int) -> None:
        body = {"key": _b64(f"load/{n % KEYS:04d}".encode()), "value": value}
        started = time.monotonic()
        why = "no endpoint"
        try:
            # Like etcd's own client, move to the next endpoint when one does not answer.
            for _ in range(tries):
                try:
                    response = await client.post(f"{next(endpoints)}/v3/kv/put", json=body)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    why = f"connect: {exc}"
                    continue
                if response.status_code == 200:
                    stats.ok((time.monotonic() - started) * 1000)
                else:
                    stats.error(f"HTTP {response.status_code}: {response.text[:160]}")
                return
            stats.error(why)
        except httpx.HTTPError as exc:
            stats.error(f"{type(exc).__name__}: {exc}")

    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
        await drive(rate, duration, put, lambda: report(stats.write()))


def run(
    lab: LabState,
    lab_dir: Path,
    rate: float,
    duration: float | None,
    report: Callable[[dict[str, Any]], None],
) -> None:
    asyncio.run(_run(lab, lab_dir, rate, duration, report))
