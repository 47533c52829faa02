"""Approvals in the store: a command's request, and the one decision taken on it.

A request and its decision are each written with their audit entry in one transaction, so
the hash chain shows them in order with the commands around them. A decision is taken
once: it updates only a request still pending, so of two approvers deciding at once on
PostgreSQL (or SQLite) exactly one is recorded and the other is told it came too late.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from operator_ai.errors import InvalidTransition, NotFound
from operator_ai.store import audit
from operator_ai.store.records import Approval, ApprovalStatus, AuditKind
from operator_ai.store.schema import approvals, sessions, tickets

TOOL = "approval"
"""The ``tool`` of the audit entries an approval writes (their kind is ``note``)."""


def sha256(command: str) -> str:
    return hashlib.sha256(command.encode()).hexdigest()


def request(
    conn: sa.Connection,
    session_id: int,
    command: str,
    reasoning: str,
    verdict: str,
    why: str,
    mode: str,
    now: datetime,
) -> Approval:
    ticket_id = conn.execute(
        sa.select(sessions.c.ticket_id).where(sessions.c.id == session_id)
    ).scalar_one()
    digest = sha256(command)
    inserted = conn.execute(
        approvals.insert().values(
            session_id=session_id, ticket_id=ticket_id, command=command,
            command_sha256=digest, reasoning=reasoning, verdict=verdict, verdict_why=why,
            mode=mode, status=ApprovalStatus.PENDING, requested_at=now,
        )
    ).inserted_primary_key  # fmt: skip
    assert inserted is not None
    approval_id = int(inserted[0])
    _audit(conn, session_id, now, f"approval #{approval_id} requested ({verdict}: {why}): "
           f"{command}", approval_id, "requested", verdict=verdict, sha256=digest)  # fmt: skip
    return get(conn, approval_id)


def decide(
    conn: sa.Connection,
    approval_id: int,
    status: ApprovalStatus,
    by: str,
    reason: str,
    now: datetime,
) -> Approval:
    """Record the decision on a pending request; InvalidTransition if one was taken."""
    before = get(conn, approval_id)
    done = conn.execute(
        approvals.update()
        .where(approvals.c.id == approval_id, approvals.c.status == ApprovalStatus.PENDING)
        .values(status=status, decided_at=now, decided_by=by, reason=reason)
    )
    if done.rowcount != 1:
        taken = get(conn, approval_id)
        raise InvalidTransition(
            f"approval #{approval_id} was already decided: {taken.status} by "
            f"{taken.decided_by} at {taken.decided_at:%H:%M:%S} UTC",
            hint=f"`operator approvals show {approval_id}` shows the decision.",
        )
    said = f": {reason}" if reason else ""
    _audit(conn, before.session_id, now, f"approval #{approval_id} {status} by {by}{said}",
           approval_id, str(status), by=by, sha256=before.command_sha256)  # fmt: skip
    return get(conn, approval_id)


def expire(conn: sa.Connection, session_id: int, why: str, now: datetime) -> None:
    """Time out what a session that has ended still waited for: nobody will run it."""
    for approval in listing(conn, ApprovalStatus.PENDING, session_id=session_id):
        decide(conn, approval.id, ApprovalStatus.TIMED_OUT, "operator", why, now)


def get(conn: sa.Connection, approval_id: int) -> Approval:
    row = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id)).first()
    if row is None:
        raise NotFound(f"no approval #{approval_id}", hint="`operator approvals list` shows them.")
    return _approval(row)


def listing(
    conn: sa.Connection,
    status: ApprovalStatus | None = None,
    session_id: int | None = None,
    ticket_id: int | None = None,
    subject: str | None = None,
    limit: int | None = None,
) -> list[Approval]:
    query = sa.select(approvals).order_by(approvals.c.id.desc()).limit(limit)
    if subject is not None:
        of_subject = sa.select(tickets.c.id).where(tickets.c.subject == subject)
        query = query.where(approvals.c.ticket_id.in_(of_subject))
    if status is not None:
        query = query.where(approvals.c.status == status)
    if session_id is not None:
        query = query.where(approvals.c.session_id == session_id)
    if ticket_id is not None:
        query = query.where(approvals.c.ticket_id == ticket_id)
    return [_approval(row) for row in conn.execute(query)]


def _audit(
    conn: sa.Connection,
    session_id: int,
    now: datetime,
    content: str,
    approval_id: int,
    event: str,
    **params: Any,
) -> None:
    audit.append(
        conn, session_id, AuditKind.NOTE, content, summary=None, tool=TOOL,
        params={"approval": approval_id, "event": event, **params}, exit_code=None,
        duration_ms=None, now=now,
    )  # fmt: skip


def _approval(row: sa.Row[Any]) -> Approval:
    values = row._asdict()
    return Approval(**{**values, "status": ApprovalStatus(values["status"])})
