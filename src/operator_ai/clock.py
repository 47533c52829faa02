"""Time in Operator is always timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; naive datetimes are refused rather than guessed at."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: Operator only stores aware UTC times")
    return value.astimezone(UTC)
