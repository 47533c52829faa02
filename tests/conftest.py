"""Shared fixtures: every store test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from operator_ai.store import Store
from operator_ai.store.engine import create_engine
from operator_ai.testing.postgres import PostgresUnavailable, create_database, postgres_server

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'operator.db'}"
    server = request.getfixturevalue("pg_server")
    return create_database(server, f"test_{os.getpid()}_{next(_names)}")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store(db_url) as s:
        yield s


def run_cli(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `operator` entry point in a child process, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
    full_env.update({"OPERATOR_HOME": str(home), "COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "operator_ai", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def raw_sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run SQL behind the store's back (to inspect it, or to tamper), in its own transaction."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()
