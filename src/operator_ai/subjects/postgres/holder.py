"""A client that holds what it takes, as a fault's helper: connections left idle (a leaking
application) or one transaction holding a lock (a job that never commits). It reads its
connection string from ``HOLD_CONNINFO``, prints a line ``ready N`` once it holds what it came for,
and sits until it is terminated."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

LIMIT = 1000
FULL, RESERVED = "too many clients", "reserved for"
"""How PostgreSQL refuses a connection for want of a slot: none left, or only the ones kept
for superusers (or roles with pg_use_reserved_connections)."""


def leak(info: str) -> list[psycopg.Connection[Any]]:
    """Connections until the server says it has no slot left, each left idle."""
    held: list[psycopg.Connection[Any]] = []
    while len(held) < LIMIT:
        try:
            held.append(psycopg.connect(info, autocommit=True))
        except psycopg.OperationalError as exc:
            if FULL not in str(exc) and RESERVED not in str(exc):
                raise
            print(f"refused after {len(held)}: {str(exc).strip()}", flush=True)
            break
    return held


def lock(info: str, table: str) -> list[psycopg.Connection[Any]]:
    """One transaction that takes a lock writers need, and never ends."""
    conn = psycopg.connect(info)
    conn.execute(f"LOCK TABLE {table} IN SHARE MODE")  # a transaction starts, and stays open
    return [conn]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("leak", "lock"))
    parser.add_argument("--table", default="load_writes")
    parser.add_argument("--lab", help="the lab it belongs to (so `lab down` finds it)")
    args = parser.parse_args(argv)
    info = os.environ["HOLD_CONNINFO"]
    try:
        held = leak(info) if args.what == "leak" else lock(info, args.table)
    except psycopg.Error as exc:
        print(f"failed: {exc}", flush=True)
        return 1
    if not held:
        print("failed: no connection held", flush=True)
        return 1
    print(f"ready {len(held)}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
