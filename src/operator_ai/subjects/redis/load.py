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
from collections import OrderedDict, deque
from typing import Any, cast

import redis
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from operator_ai.core import Cluster, Report, Stopping
from operator_ai.lab.load import LoadStats, drive
from operator_ai.subjects.redis.nodes import MASTER, endpoint, fail_fast, newest, sentinels, servers

TIMEOUT = 1.0
TTL_SECONDS = 600
TRACK_SECONDS = 120.0
TRACK_MAX = 20_000
CHECK_EVERY = 2.0
CHECK_AFTER = 0.5
"""A write is read back once it is this old, so one still replicating is not yet counted."""
LOST_WINDOW = 60
LOST_KEPT = 1000
BATCH = 500


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

    async def checker() -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            await check(ledger, run, held_by, where)

    def publish() -> None:
        stats.extra["writes"] = {"run": run, **ledger.stats()}
        report(stats.write())

    checking = asyncio.create_task(checker())
    try:
        await drive(rate, duration, write, publish, stop)
    finally:
        checking.cancel()
        for client in writers:
            await client.aclose()


def run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    asyncio.run(_run(cluster, rate, duration, report, stop))
