"""The current shape of the tables, for queries. Migrations (migrations.py) create it;
tests check that the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from operator_ai.clock import as_utc


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite keeps them as naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Label(sa.TypeDecorator[str]):
    """Text holding an enum's value; psycopg would otherwise write an Enum by its name."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


JSON = sa.JSON().with_variant(JSONB(), "postgresql")
metadata = sa.MetaData()

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("invariant", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("status", Label, nullable=False),
    sa.Column("held", sa.Boolean, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("evidence", JSON, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False),
    sa.Column("times_reopened", sa.Integer, nullable=False),
    sa.Column("claimed_by", sa.Text),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("resolved_by", Label),
    sa.Column("resolution", sa.Text),
    sa.Column("cleared_at", UTCDateTime),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("incident_id", sa.BigInteger),
    sa.Column("session_id", sa.BigInteger),
    sa.Column("placed_at", UTCDateTime),
)

ticket_events = sa.Table(
    "ticket_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("ticket_id", sa.BigInteger, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", Label, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("session_id", sa.BigInteger),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("ticket_id", sa.BigInteger, nullable=False),
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("outcome", Label),
    sa.Column("summary", sa.Text),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("tokens_in", sa.BigInteger, nullable=False),
    sa.Column("tokens_out", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
)

audit_entries = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("session_id", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", Label, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("tool", sa.Text),
    sa.Column("params", JSON),
    sa.Column("exit_code", sa.Integer),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("session_id", sa.BigInteger, nullable=False),
    sa.Column("ticket_id", sa.BigInteger, nullable=False),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("command_sha256", sa.Text, nullable=False),
    sa.Column("reasoning", sa.Text, nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column("verdict_why", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("status", Label, nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("decided_at", UTCDateTime),
    sa.Column("decided_by", sa.Text),
    sa.Column("reason", sa.Text),
)

eval_runs = sa.Table(
    "eval_runs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("campaign", sa.Text),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("operator_version", sa.Text, nullable=False),
    sa.Column("prompt_sha256", sa.Text, nullable=False),
    sa.Column("scenarios", JSON, nullable=False),
    sa.Column("trials", sa.Integer, nullable=False),
    sa.Column("parallel", sa.Integer, nullable=False),
)

eval_trials = sa.Table(
    "eval_trials",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("scenario", sa.Text, nullable=False),
    sa.Column("scenario_sha256", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("lab", sa.Text, nullable=False),
    sa.Column("targets", JSON, nullable=False),
    sa.Column("outcome", Label, nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("injected_at", UTCDateTime),
    sa.Column("ended_at", UTCDateTime, nullable=False),
    sa.Column("ttd_seconds", sa.Float),
    sa.Column("ttm_seconds", sa.Float),
    sa.Column("overhead_seconds", sa.Float, nullable=False),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("commands", sa.Integer, nullable=False),
    sa.Column("state_changing", sa.Integer, nullable=False),
    sa.Column("tokens_in", sa.BigInteger, nullable=False),
    sa.Column("tokens_out", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("error_rate", sa.Float),
    sa.Column("false_positives", sa.Integer, nullable=False),
    sa.Column("tickets", JSON, nullable=False),
    sa.Column("sessions", JSON, nullable=False),
)

# One row: the id and hash of the newest audit entry. Appends lock it, which orders them.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.Text, nullable=False),
)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)
