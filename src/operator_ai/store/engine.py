"""Opening a database: URL handling, SQLite's pragmas and locking, error translation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError

from operator_ai.errors import StoreUnavailable


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def create_engine(url: str) -> sa.Engine:
    """An engine for ``sqlite:///PATH`` or ``postgresql://...``, set up for Operator."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise StoreUnavailable(
            f"not a database URL: {url!r}",
            hint="Use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DBNAME.",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return sa.create_engine(
                parsed,
                json_serializer=_dumps,
                pool_pre_ping=True,
                connect_args={"connect_timeout": 5, "options": "-c timezone=UTC"},
            )
        except NoSuchModuleError as exc:
            raise StoreUnavailable(f"unsupported PostgreSQL driver in {url!r}") from exc
    raise StoreUnavailable(
        f"unsupported database {backend!r} in {url!r}",
        hint="Operator stores its data in SQLite (the default) or PostgreSQL.",
    )


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    if url.database and url.database != ":memory:":
        path = Path(url.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600: it holds the audit trail. SQLite gives its -wal and -shm files the
        # database's own mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    engine = sa.create_engine(url, json_serializer=_dumps)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module; "begin" below issues our own.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # Writers take the lock up front, so read-then-write can never race another writer.
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def transaction(engine: sa.Engine, readonly: bool = False) -> Iterator[sa.Connection]:
    """One transaction; database failures become ``StoreUnavailable``."""
    try:
        with engine.connect() as conn:
            if readonly:
                conn = conn.execution_options(readonly=True)
            with conn.begin():
                yield conn
    except IntegrityError:
        raise
    except DBAPIError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        # The transaction was rolled back, so the database is as it was before the call.
        hint = DISK_FULL_HINT if "full" in reason.lower() else None
        raise StoreUnavailable(f"cannot use the database {where}: {reason}", hint) from exc


DISK_FULL_HINT = "Free space on the disk that holds the database, then retry; nothing was lost."
