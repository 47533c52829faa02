"""The one exception tree of Operator.

Every error a user can cause or meet is an ``OperatorError``. Each carries a ``hint``: what
to do next. Foreign exceptions (SQLAlchemy, psycopg, tomllib...) are translated where they
cross into our code, with ``raise Ours(...) from exc``, so the CLI catches only the base.

    OperatorError
    ├── ConfigError            malformed or invalid settings
    └── StoreError             anything about the tickets/sessions/audit database
        ├── StoreUnavailable   cannot open or reach the database (corrupt file, server down)
        ├── SchemaTooNew       the database was migrated by a newer Operator
        ├── NotFound           no ticket or session with that id
        ├── InvalidTransition  the ticket's status does not allow the operation
        └── LeaseLost          the worker no longer holds the ticket's claim
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error Operator raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(OperatorError):
    hint = "Fix the setting named above; `operator config show` prints what is in effect."


class StoreError(OperatorError):
    pass


class StoreUnavailable(StoreError):
    hint = "Check --db / OPERATOR_DB; for SQLite, move a damaged file aside and rerun."


class SchemaTooNew(StoreError):
    hint = "Upgrade operator-ai, or point --db at a database this version created."


class NotFound(StoreError):
    hint = "`operator tickets list` and `operator audit list` show the ids that exist."


class InvalidTransition(StoreError):
    hint = "`operator tickets show ID` shows the ticket's status and timeline."


class LeaseLost(StoreError):
    hint = "Another worker or a human took over the ticket; stop working on it."
