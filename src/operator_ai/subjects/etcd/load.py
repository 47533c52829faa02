"""A steady write load on etcd through its gateway, as a client with endpoint failover."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import time

import httpx

from operator_ai.core import Cluster, Report, Stopping
from operator_ai.lab.load import LoadStats, drive

KEYS = 1000
VALUE_BYTES = 128
TIMEOUT = 2.0


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def _run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    stats = LoadStats(cluster.workdir / "load.json", "etcd", rate)
    endpoints = itertools.cycle([n.url() for n in cluster.nodes])
    tries = len(cluster.nodes)
    value = _b64(os.urandom(VALUE_BYTES))

    async def put(n: int) -> None:
        body = {"key": _b64(f"load/{n % KEYS:04d}".encode()), "value": value}
        started = time.monotonic()
        why = "no endpoint"
        try:
            # Like etcd's own client, move to the next endpoint when one does not answer in
            # time: a member just restarted accepts connections before it serves writes. A
            # retried put rewrites the same key with the same value, so it is harmless.
            for _ in range(tries):
                try:
                    response = await client.post(f"{next(endpoints)}/v3/kv/put", json=body)
                except (httpx.ConnectError, httpx.TimeoutException) as exc:
                    why = f"{type(exc).__name__}: {exc}"
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
        await drive(rate, duration, put, lambda: report(stats.write()), stop)


def run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    asyncio.run(_run(cluster, rate, duration, report, stop))
