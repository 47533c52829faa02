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

from operator_ai.lab.load import LoadStats
from operator_ai.lab.state import LabState

KEYS = 1000
VALUE_BYTES = 128
MAX_IN_FLIGHT = 256
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
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    value = _b64(os.urandom(VALUE_BYTES))

    async def put(client: httpx.AsyncClient, n: int) -> None:
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
        finally:
            slots.release()

    async def publish() -> None:
        while True:
            await asyncio.sleep(1.0)
            report(stats.write())

    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
        publisher = asyncio.create_task(publish())
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        try:
            for n in itertools.count():
                due = start + n / rate
                if duration is not None and due - start >= duration:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await slots.acquire()
                task = asyncio.create_task(put(client, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            publisher.cancel()
            report(stats.write())


def run(
    lab: LabState,
    lab_dir: Path,
    rate: float,
    duration: float | None,
    report: Callable[[dict[str, Any]], None],
) -> None:
    asyncio.run(_run(lab, lab_dir, rate, duration, report))
