"""Schema migrations: recorded, identical on both databases, and upgrading old files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import raw_sql
from fixtures.make_v1_db import write as write_v1
from operator_ai.errors import SchemaTooNew
from operator_ai.store import AuditKind, Status, Store
from operator_ai.store.engine import create_engine
from operator_ai.store.migrations import LATEST, MIGRATIONS
from operator_ai.store.schema import metadata

V1_FIXTURE = Path(__file__).parent / "fixtures" / "operator-v1.db"


def _versions(url: str) -> list[tuple[Any, ...]]:
    return raw_sql(url, "SELECT version, name FROM schema_migrations ORDER BY 1")


def test_fresh_database_records_every_migration(store: Store) -> None:
    assert _versions(store.url) == [(m.version, m.name) for m in MIGRATIONS]


def test_tables_match_the_query_schema(store: Store) -> None:
    engine = create_engine(store.url)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == set(table.columns.keys()), table.name
    engine.dispose()


def test_version_1_database_opens_and_migrates(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        shutil.copy(V1_FIXTURE, tmp_path / "operator.db")  # the committed file stays as it is
    else:
        write_v1(db_url)
    assert _versions(db_url) == [(1, "initial")]

    with Store(db_url) as store:
        assert [v for v, _ in _versions(db_url)] == list(range(1, LATEST + 1))
        ticket = store.ticket(1)
        assert ticket.status == Status.RESOLVED and ticket.resolved_by == "agent"
        assert ticket.cleared_at is None
        assert ticket.scope == ticket.subject  # tickets before scopes are their subject's
        assert ticket.evidence == {"health": False}
        assert ticket.opened_at.isoformat() == "2026-11-01T09:30:00+00:00"
        assert [e.seq for e in store.audit_entries(1)] == [1, 2]
        assert store.verify_audit().ok

        store.append_audit(1, AuditKind.NOTE, "written after the upgrade")
        result = store.verify_audit()
        assert result.ok and result.checked == 3


def test_database_from_a_newer_operator_is_refused(db_url: str) -> None:
    Store(db_url).close()
    raw_sql(
        db_url,
        "INSERT INTO schema_migrations (version, name, applied_at)"
        " VALUES (999, 'from_the_future', CURRENT_TIMESTAMP)",
    )
    with pytest.raises(SchemaTooNew, match="999"):
        Store(db_url)
