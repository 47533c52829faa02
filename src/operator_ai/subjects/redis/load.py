"""Writes through Sentinel-aware clients, and a checker that reads them back.

The writers are redis-py's own Sentinel clients, the way applications find the primary: one
per sentinel, each asking its own sentinel first (as an application asks the sentinel on its
host), writing in turn. Each write is a key with the load's run id and a sequence number.

The checker keeps the acknowledged writes of the last two minutes and, every two seconds,
reads them all back from every server, while the primary the sentinels name answers (the
view with the newest config epoch, Sentinel's own rule). A write that no server holds any
more, on two checks in a row, is lost for good. That is how a split brain shows: a
partitioned primary that kept taking writes still holds them, until it rejoins and resyncs
from the new primary."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, cast

import redis
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from operator_ai.core import Cluster, Report, Stopping
from operator_ai.lab.load import Ledger, LoadStats, drive_checked
from operator_ai.subjects.redis.nodes import MASTER, endpoint, fail_fast, newest, sentinels, servers

TIMEOUT = 1.0
TTL_SECONDS = 600
BATCH = 500


async def newest_primary(nodes: list[tuple[str, int]]) -> tuple[str, int] | None:
    """The primary named by the sentinel whose view has the newest config epoch."""

    async def view(host: str, port: int) -> tuple[int, str] | None:
        try:
            async with Redis(host=host, port=port, **fail_fast(TIMEOUT)) as client:
                master = cast(dict[str, Any], await client.sentinel_master(MASTER))
        except (TimeoutError, redis.RedisError, OSError):
            return None
        return int(master.get("config-epoch", 0)), f"{master['ip']}:{master['port']}"

    named = newest(v for v in await asyncio.gather(*(view(h, p) for h, p in nodes)) if v)
    if named is None:
        return None
    host, _, port = named.rpartition(":")
    return host, int(port)


async def _read(host: str, port: int, keys: list[str]) -> list[str | None] | None:
    try:
        async with Redis(host=host, port=port, **fail_fast(TIMEOUT)) as client:
            found: list[str | None] = []
            for start in range(0, len(keys), BATCH):
                values = await client.mget(keys[start : start + BATCH])
                found += [None if v is None else str(v) for v in values]
            return found
    except (TimeoutError, redis.RedisError, OSError):
        return None


async def check(
    ledger: Ledger,
    run: str,
    server_nodes: list[tuple[str, int]],
    sentinel_nodes: list[tuple[str, int]],
) -> None:
    """Read every due write back from every server; count the ones no server holds. Only
    while the primary the sentinels name answers: what it holds is what clients will read."""
    due = ledger.due()
    primary = await newest_primary(sentinel_nodes)
    if not due or primary is None:
        return
    keys = [f"load:{run}:{seq}" for seq in due]
    held = dict(
        zip(
            server_nodes,
            await asyncio.gather(*(_read(h, p, keys) for h, p in server_nodes)),
            strict=True,
        )
    )
    if held.get(primary) is None:
        return
    answers = [values for values in held.values() if values is not None]
    for index, seq in enumerate(due):
        ledger.seen(seq, any(values[index] == str(seq) for values in answers))
    ledger.checked_at = time.time()


async def _run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    stats = LoadStats(cluster.workdir / "load.json", "redis", rate)
    ledger = Ledger()
    run = os.urandom(4).hex()
    where = [endpoint(n) for n in sentinels(cluster)]
    held_by = [endpoint(n) for n in servers(cluster)]
    writers = []
    for i in range(len(where)):
        order = where[i:] + where[:i]
        sentinel = Sentinel(order, sentinel_kwargs=fail_fast(TIMEOUT), **fail_fast(TIMEOUT))  # type: ignore[no-untyped-call]
        writers.append(sentinel.master_for(MASTER, **fail_fast(TIMEOUT)))

    async def write(n: int) -> None:
        client = writers[n % len(writers)]
        started = time.monotonic()
        try:
            await client.set(f"load:{run}:{n}", str(n), ex=TTL_SECONDS)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            stats.error(f"{type(exc).__name__}: {str(exc)[:160]}")
            return
        stats.ok((time.monotonic() - started) * 1000)
        address = getattr(client.connection_pool, "master_address", None)
        ledger.ack(n, f"{address[0]}:{address[1]}" if address else "?")

    try:
        await drive_checked(stats, ledger, run, rate, duration, write,
                            lambda: check(ledger, run, held_by, where), report, stop)  # fmt: skip
    finally:
        for client in writers:
            await client.aclose()


def run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    asyncio.run(_run(cluster, rate, duration, report, stop))
