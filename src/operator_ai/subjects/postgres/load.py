"""Small transactions through a real client, and a checker that reads them back.

The writers are psycopg connections made the way applications make them against a Patroni
cluster: one connection string naming every member with ``target_session_attrs=read-write``,
so libpq finds whichever accepts writes now. Each transaction inserts one row with the
load's run id and a sequence number; a commit PostgreSQL acknowledged is recorded. A
connection that fails is dropped and made again on its next turn, which is how a client
follows a failover.

Every two seconds the checker reads the acknowledged rows back from the primary. A row
missing on two checks in a row is a lost commit: after a failover, what the new primary
never received from the old one."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psycopg

from operator_ai.core import Cluster, Report, Stopping
from operator_ai.lab.load import Ledger, LoadStats, drive_checked
from operator_ai.subjects.postgres.nodes import APP, conninfo, error_text, members

TIMEOUT = 2.0
CONNECTIONS = 8
"""The writers' connections: a small pool, as an application keeps."""
BATCH = 2000


def writer_conninfo(cluster: Cluster) -> str:
    return conninfo(cluster, members(cluster), APP, target_session_attrs="read-write",
                    connect_timeout=int(TIMEOUT), application_name="operator-load",
                    options=f"-c statement_timeout={int(TIMEOUT * 1000)}")  # fmt: skip


class Pool:
    """Connections made on demand; one that failed is thrown away."""

    def __init__(self, info: str, hosts: int, size: int) -> None:
        self.info = info
        self.connect_within = TIMEOUT * hosts + 1  # libpq tries each host in turn
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any] | None] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)

    async def run(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = await self.idle.get()
        try:
            if conn is None or conn.closed:
                conn = None
                conn = await asyncio.wait_for(self._connect(), self.connect_within)
            cursor = await asyncio.wait_for(conn.execute(query, args), TIMEOUT * 2)
            rows = await cursor.fetchall() if cursor.description else []
        except BaseException:
            if conn is not None:
                await conn.close()
            conn = None
            raise
        finally:
            self.idle.put_nowait(conn)
        return rows

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.info, autocommit=True)

    async def close(self) -> None:
        while not self.idle.empty():
            if (conn := self.idle.get_nowait()) is not None:
                await conn.close()


async def check(ledger: Ledger, run: str, pool: Pool) -> None:
    """Read every due commit back from the primary; count the ones it does not hold."""
    due = ledger.due()
    held: set[int] = set()
    try:
        for start in range(0, len(due), BATCH):
            rows = await pool.run("SELECT seq FROM load_writes WHERE run = %s AND seq = ANY(%s)",
                                  (run, due[start : start + BATCH]))  # fmt: skip
            held.update(int(row[0]) for row in rows)
    except (psycopg.Error, OSError, TimeoutError):
        return  # no primary to ask now: nothing is known
    for seq in due:
        ledger.seen(seq, seq in held)
    ledger.checked_at = time.time()


async def _run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    stats = LoadStats(cluster.workdir / "load.json", "postgres", rate)
    ledger = Ledger()
    run = os.urandom(4).hex()
    info = writer_conninfo(cluster)
    hosts = len(members(cluster))
    writers, reader = Pool(info, hosts, CONNECTIONS), Pool(info, hosts, 1)

    async def write(n: int) -> None:
        started = time.monotonic()
        try:
            rows = await writers.run(
                "INSERT INTO load_writes (run, seq) VALUES (%s, %s) "
                "RETURNING host(inet_server_addr()) || ':' || inet_server_port()",
                (run, n),
            )
        except (psycopg.Error, OSError, TimeoutError) as exc:
            stats.error(error_text(exc)[:200])
            return
        stats.ok((time.monotonic() - started) * 1000)
        ledger.ack(n, str(rows[0][0]) if rows else "?")

    try:
        await drive_checked(stats, ledger, run, rate, duration, write,
                            lambda: check(ledger, run, reader), report, stop,
                            max_in_flight=CONNECTIONS * 4)  # fmt: skip
    finally:
        await writers.close()
        await reader.close()


def run(
    cluster: Cluster, rate: float, duration: float | None, report: Report, stop: Stopping
) -> None:
    asyncio.run(_run(cluster, rate, duration, report, stop))
