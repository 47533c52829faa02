"""The store: tickets and their timeline, agent sessions, and the audit trail.

Every operation is one transaction. Status transitions are checked here, in one place, so
the monitor, the agent workers and the CLI cannot disagree about what a ticket may do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from operator_ai.clock import as_utc, utcnow
from operator_ai.core import Violation
from operator_ai.errors import InvalidTransition, LeaseLost, NotFound
from operator_ai.store import approvals, audit, evals
from operator_ai.store.engine import create_engine, transaction
from operator_ai.store.migrations import migrate
from operator_ai.store.records import (
    SEVERITIES,
    Approval,
    ApprovalStatus,
    AuditEntry,
    AuditKind,
    Claim,
    EvalRun,
    EvalTrial,
    Outcome,
    Session,
    Status,
    Ticket,
    TicketEvent,
)
from operator_ai.store.schema import sessions, ticket_events, tickets

LIVE = (Status.OPEN, Status.WORKING, Status.ESCALATED)
EVALS = "eval/%"
"""The scopes of eval trials' tickets."""
# What becomes of the ticket when a session ends with each outcome.
AFTER_SESSION = {
    Outcome.RESOLVED: Status.RESOLVED,
    Outcome.ESCALATED: Status.ESCALATED,
    Outcome.FAILED: Status.OPEN,
    Outcome.INTERRUPTED: Status.OPEN,
}


INCIDENT_WINDOW = 30.0
"""Seconds within which tickets of one scope join one incident. One fault's effects open
their tickets within the longest grace period (5 s for etcd) plus the load's error window
(10 s) and a few monitor cycles: about 20 s on a loaded machine. Two faults half a minute
apart stay two incidents. A ticket also joins an incident that a session is working, at any
time: the engineer on the incident sees what happens next to the same system."""

# The claim path's statements, built once: a claim is the hottest write the store does.
_lead = tickets.alias("lead")
_CLAIMABLE = (
    tickets.c.status == Status.OPEN,
    tickets.c.held.is_(False),
    sa.or_(tickets.c.lease_until.is_(None), tickets.c.lease_until <= sa.bindparam("now")),
)
# The most urgent claimable ticket; its incident's first ticket is the incident's lock, so
# two workers never split one incident (SKIP LOCKED passes over incidents being claimed).
# Both rows are locked, so that PostgreSQL re-checks both against their newest versions.
_NEXT_CLAIMABLE = (
    sa.select(tickets.c.id, tickets.c.incident_id)
    .join(_lead, _lead.c.id == tickets.c.incident_id)
    .where(*_CLAIMABLE)
    .order_by(
        sa.case({s: i for i, s in enumerate(SEVERITIES)}, value=tickets.c.severity),
        tickets.c.opened_at,
        tickets.c.id,
    )
    .limit(1)
    .with_for_update(skip_locked=True, of=(tickets, _lead))
)
_TAKE = (
    tickets.update()
    .where(tickets.c.incident_id == sa.bindparam("incident"), *_CLAIMABLE)
    .values(
        status=Status.WORKING,
        claimed_by=sa.bindparam("worker"),
        lease_until=sa.bindparam("lease"),
        session_id=sa.bindparam("sid"),
    )
    .returning(*tickets.c)
)
_START_SESSION = (
    sessions.insert()
    .values(steps=0, tokens_in=0, tokens_out=0, cost_usd=0.0)
    .returning(*sessions.c)
)
_INSERT_EVENT = ticket_events.insert()


class Store:
    """Operator's shared database. SQLite by default, PostgreSQL by URL."""

    def __init__(
        self, url: str, reopen_window: float = 600.0, incident_window: float = INCIDENT_WINDOW
    ) -> None:
        self.url = url
        self.reopen_window = timedelta(seconds=reopen_window)
        self.incident_window = timedelta(seconds=incident_window)
        self._engine = create_engine(url)
        try:
            with self._tx() as conn:
                migrate(conn)
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _tx(self, readonly: bool = False) -> AbstractContextManager[sa.Connection]:
        return transaction(self._engine, readonly)

    # -- the monitor's side -------------------------------------------------------------

    def report_violation(
        self, v: Violation, now: datetime | None = None, scope: str | None = None
    ) -> tuple[Ticket, str]:
        """Open a ticket for ``v`` in ``scope`` (default: its subject), update the live one,
        or reopen a recently resolved one.

        Returns the ticket and what happened: ``opened``, ``updated`` or ``reopened``.
        """
        if v.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {v.severity!r}")
        now, scope = _now(now), scope or v.subject
        try:
            return self._report(v, now, scope)
        except IntegrityError:
            # Another monitor opened the same key between our read and our insert.
            return self._report(v, now, scope)

    def _report(self, v: Violation, now: datetime, scope: str) -> tuple[Ticket, str]:
        seen = {"message": v.message, "evidence": v.evidence, "last_seen_at": now}
        keyed = (tickets.c.scope == scope, tickets.c.key == v.key)
        with self._tx() as conn:
            live = conn.execute(
                sa.select(tickets).where(*keyed, tickets.c.status.in_(LIVE)).with_for_update()
            ).first()
            if live is not None:
                values = {**seen, "occurrences": live.occurrences + 1, "cleared_at": None}
                conn.execute(tickets.update().where(tickets.c.id == live.id).values(values))
                if live.cleared_at is not None:
                    _event(conn, live.id, now, "violation_returned", "monitor", v.message)
                return _ticket(conn, live.id), "updated"

            recent = conn.execute(
                sa.select(tickets)
                .where(
                    *keyed,
                    tickets.c.status == Status.RESOLVED,
                    tickets.c.resolved_at >= now - self.reopen_window,
                )
                .order_by(tickets.c.resolved_at.desc())
                .limit(1)
                .with_for_update()
            ).first()
            if recent is not None:
                _reopen(
                    conn,
                    recent,
                    now,
                    "monitor",
                    v.message,
                    **seen,
                    occurrences=recent.occurrences + 1,
                )
                self._place(conn, recent.id, scope, now)
                return _ticket(conn, recent.id), "reopened"

            ticket_id = conn.execute(
                tickets.insert()
                .values(
                    **seen,
                    key=v.key,
                    scope=scope,
                    subject=v.subject,
                    invariant=v.invariant,
                    target=v.target,
                    severity=v.severity,
                    status=Status.OPEN,
                    held=False,
                    first_seen_at=v.first_seen_at or now,
                    opened_at=now,
                    occurrences=1,
                    times_reopened=0,
                )
                .returning(tickets.c.id)
            ).scalar_one()
            _event(conn, ticket_id, now, "opened", "monitor", v.message)
            self._place(conn, ticket_id, scope, now)
            return _ticket(conn, ticket_id), "opened"

    def _place(self, conn: sa.Connection, ticket_id: int, scope: str, now: datetime) -> None:
        """Put a ticket that has just (re)opened in its incident: the one it belongs to if
        that is still live (unheld or reopened by hand); else the scope's live incident that
        a session works, or whose newest ticket (re)opened within the incident window; else
        a new one of its own. Joining a worked incident hands the ticket to its session."""
        live = (
            sa.select(
                tickets.c.incident_id,
                sa.func.max(tickets.c.placed_at).label("newest"),
                sa.func.max(tickets.c.session_id)
                .filter(tickets.c.status == Status.WORKING)
                .label("session"),
            )
            .where(
                tickets.c.scope == scope,
                tickets.c.status.in_((Status.OPEN, Status.WORKING)),
                tickets.c.id != ticket_id,
            )
            .group_by(tickets.c.incident_id)
        )
        current = conn.execute(
            sa.select(tickets.c.incident_id).where(tickets.c.id == ticket_id)
        ).scalar()
        rows = conn.execute(live).all()
        join = (
            next((r for r in rows if r.incident_id == current), None)  # unheld, reopened
            or next((r for r in rows if r.session is not None), None)
            or max(
                (r for r in rows if r.newest >= now - self.incident_window),
                key=lambda r: r.newest,
                default=None,
            )
        )
        if join is None:
            conn.execute(
                tickets.update()
                .where(tickets.c.id == ticket_id)
                .values(incident_id=ticket_id, placed_at=now)
            )
            return
        incident = join.incident_id
        _row(conn, incident)  # the incident's lock: a claim under way finishes first
        values: dict[str, Any] = {"incident_id": incident, "placed_at": now}
        holder = _holder(conn, incident, now)
        if holder is not None:
            values.update(status=Status.WORKING, claimed_by=holder.claimed_by,
                          lease_until=holder.lease_until, session_id=holder.session_id)  # fmt: skip
        else:  # an incident in backoff after a failed session: the newcomer waits with it
            backoff = conn.execute(
                sa.select(sa.func.max(tickets.c.lease_until)).where(
                    tickets.c.incident_id == incident, tickets.c.status == Status.OPEN
                )
            ).scalar()
            if backoff is not None and backoff > now:
                values["lease_until"] = backoff
        conn.execute(tickets.update().where(tickets.c.id == ticket_id).values(values))
        _event(conn, ticket_id, now, "joined", "store", f"incident #{incident}")
        if holder is not None:
            _event(conn, ticket_id, now, "claimed", holder.claimed_by, "joined the session",
                   holder.session_id)  # fmt: skip

    def clear(
        self, key: str, now: datetime | None = None, scope: str | None = None
    ) -> Ticket | None:
        """The monitor saw ``key`` hold again (in ``scope``; default: the key's subject). A
        claimed ticket is only marked cleared: the agent that holds it resolves it once it has
        verified."""
        now, scope = _now(now), scope or key.split(":", 1)[0]
        with self._tx() as conn:
            row = conn.execute(
                sa.select(tickets)
                .where(tickets.c.scope == scope, tickets.c.key == key, tickets.c.status.in_(LIVE))
                .with_for_update()
            ).first()
            if row is None:
                return None
            if row.status == Status.WORKING:
                if row.cleared_at is None:
                    conn.execute(
                        tickets.update().where(tickets.c.id == row.id).values(cleared_at=now)
                    )
                    _event(conn, row.id, now, "cleared", "monitor", "violation no longer seen")
            else:
                _close(conn, row.id, now, Status.RESOLVED, "monitor", "violation no longer seen")
            return _ticket(conn, row.id)

    # -- the agent's side ---------------------------------------------------------------

    def claim(
        self,
        worker: str,
        lease_seconds: float,
        model: str | None = None,
        now: datetime | None = None,
        scope: str | None = None,
    ) -> Claim | None:
        """Atomically take the most urgent open ticket under a lease, and open its session.
        With ``scope``, only that scope's tickets; without, any but an eval trial's
        (`eval/...`), which only the trial's own workers take.

        Returns None when nothing is claimable. Held tickets, and tickets in backoff after a
        failed session, are skipped.
        """
        now = _now(now)
        query = _NEXT_CLAIMABLE.where(
            tickets.c.scope == scope if scope is not None else tickets.c.scope.not_like(EVALS)
        )
        with self._tx() as conn:
            first = conn.execute(query, {"now": now}).first()
            if first is None:
                return None
            session = conn.execute(
                _START_SESSION,
                {"ticket_id": first.id, "worker": worker, "model": model, "started_at": now},
            ).one()
            lease = now + timedelta(seconds=lease_seconds)
            taken = conn.execute(
                _TAKE,
                {"incident": first.incident_id, "worker": worker, "lease": lease,
                 "sid": session.id, "now": now},
            ).all()  # fmt: skip
            held = sorted((_to_ticket(r) for r in taken), key=lambda t: t.id)
            for ticket in held:
                _event(conn, ticket.id, now, "claimed", worker, model or "", session.id)
            lead = next(t for t in held if t.id == first.id)
            return Claim(lead, _to_session(session), tuple(held))

    def renew(self, session_id: int, lease_seconds: float, now: datetime | None = None) -> datetime:
        """Extend the lease held by ``session_id``; raise LeaseLost if it no longer holds it."""
        now = _now(now)
        lease = now + timedelta(seconds=lease_seconds)
        with self._tx() as conn:
            _live_session(conn, session_id, now)
            conn.execute(
                tickets.update()
                .where(tickets.c.session_id == session_id, tickets.c.status == Status.WORKING)
                .values(lease_until=lease)
            )
            return lease

    def end_session(
        self,
        session_id: int,
        outcome: Outcome,
        summary: str = "",
        *,
        steps: int = 0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        backoff_seconds: float = 0.0,
        verified: Collection[int] | None = None,
        now: datetime | None = None,
    ) -> Ticket:
        """Record how a session ended and move its ticket accordingly, in one transaction.
        ``verified``: the tickets a resolved session saw hold (default: all it holds); the
        others, which joined after its last check, go back to the queue.

        Resolved: the ticket is resolved by the agent. Escalated: it waits for a human.
        Failed: it goes back to the queue, not claimable for ``backoff_seconds``.
        """
        now = _now(now)
        with self._tx() as conn:
            session = _live_session(conn, session_id, now)
            _finish_session(
                conn,
                session_id,
                now,
                outcome,
                summary,
                steps=steps,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_usd=cost_usd,
            )
            status = AFTER_SESSION[outcome]
            held = _lock_held(conn, session_id)
            for ticket_id in held:
                if status == Status.OPEN:
                    _requeue(conn, ticket_id, now + timedelta(seconds=backoff_seconds)
                             if backoff_seconds else None)  # fmt: skip
                    _event(conn, ticket_id, now, f"session_{outcome}", session.worker, summary,
                           session_id)  # fmt: skip
                elif (
                    status == Status.RESOLVED and verified is not None and ticket_id not in verified
                ):
                    # It joined after the agent's last check: nobody verified it; requeue it.
                    _requeue(conn, ticket_id)
                    _event(conn, ticket_id, now, "released", "store",
                           "joined after the session's verification", session_id)  # fmt: skip
                else:
                    _close(conn, ticket_id, now, status, "agent", summary, session_id)
            return _ticket(conn, session.ticket_id)

    def session_tickets(self, session_id: int) -> list[Ticket]:
        """The tickets a session holds, or held last: its incident, as far as it took it."""
        query = sa.select(tickets).where(tickets.c.session_id == session_id)
        with self._tx(readonly=True) as conn:
            return [_to_ticket(r) for r in conn.execute(query.order_by(tickets.c.id))]

    def incident(self, incident_id: int) -> list[Ticket]:
        query = sa.select(tickets).where(tickets.c.incident_id == incident_id)
        with self._tx(readonly=True) as conn:
            return [_to_ticket(r) for r in conn.execute(query.order_by(tickets.c.id))]

    def last_fix(self, ticket: Ticket) -> tuple[Session, str] | None:
        """The newest session that an agent resolved on ``ticket``'s key in its scope, before
        this one, with the summary of its last reasoning: what the agent said it did."""
        claimed = (
            sa.select(ticket_events.c.session_id)
            .join(tickets, tickets.c.id == ticket_events.c.ticket_id)
            .where(
                tickets.c.scope == ticket.scope,
                tickets.c.key == ticket.key,
                ticket_events.c.kind == "claimed",
            )
        )
        query = (
            sa.select(sessions)
            .where(sessions.c.id.in_(claimed), sessions.c.outcome == Outcome.RESOLVED)
            .order_by(sessions.c.id.desc())
            .limit(1)
        )
        with self._tx(readonly=True) as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            said = audit.last_summary(conn, row.id, AuditKind.REASONING)
            return _to_session(row), said or (row.summary or "")

    def release_expired(self, now: datetime | None = None) -> list[int]:
        """Return tickets whose lease ran out to the queue; their sessions become interrupted."""
        now = _now(now)
        expired = (tickets.c.status == Status.WORKING, tickets.c.lease_until < now)
        with self._tx() as conn:
            ids = (
                conn.execute(
                    sa.select(tickets.c.id).where(*expired).order_by(tickets.c.id).with_for_update()
                )
                .scalars()
                .all()
            )  # locked in id order, as every path that takes several does
            rows = conn.execute(
                tickets.update()
                .where(tickets.c.id.in_(ids), *expired)
                .values(status=Status.OPEN, claimed_by=None, lease_until=None)
                .returning(tickets.c.id, tickets.c.session_id)
            ).all()
            running = sa.select(sessions.c.id).where(sessions.c.outcome.is_(None))
            rows = sorted(rows, key=lambda r: r.id)
            for row in rows:
                sid = conn.execute(running.where(sessions.c.id == row.session_id)).scalar()
                if sid is not None:
                    _finish_session(conn, sid, now, Outcome.INTERRUPTED,
                                    "lease expired: the worker is gone")  # fmt: skip
                _event(conn, row.id, now, "lease_expired", "store", "", row.session_id)
            return [r.id for r in rows]

    # -- the human's side ---------------------------------------------------------------

    def hold(self, ticket_id: int, actor: str = "human", now: datetime | None = None) -> Ticket:
        """Keep agents off a ticket. A claimed ticket is taken back from its worker."""
        now = _now(now)
        with self._tx() as conn:
            row = _row_and_session(conn, ticket_id)
            if row.held:
                raise InvalidTransition(f"ticket {ticket_id} is already held")
            values: dict[str, Any] = {"held": True}
            if row.status == Status.WORKING:
                _interrupt(conn, ticket_id, now, f"ticket held by {actor}")
                values.update(status=Status.OPEN, claimed_by=None, lease_until=None)
            conn.execute(tickets.update().where(tickets.c.id == ticket_id).values(values))
            _event(conn, ticket_id, now, "held", actor)
            return _ticket(conn, ticket_id)

    def unhold(self, ticket_id: int, actor: str = "human", now: datetime | None = None) -> Ticket:
        now = _now(now)
        with self._tx() as conn:
            row = _row(conn, ticket_id)
            if not row.held:
                raise InvalidTransition(f"ticket {ticket_id} is not held")
            conn.execute(tickets.update().where(tickets.c.id == ticket_id).values(held=False))
            _event(conn, ticket_id, now, "unheld", actor)
            if row.status == Status.OPEN:  # back to its incident, and to the session on it
                self._place(conn, ticket_id, row.scope, now)
            return _ticket(conn, ticket_id)

    def reopen(self, ticket_id: int, actor: str = "human", now: datetime | None = None) -> Ticket:
        """Put a resolved or escalated ticket back in the queue."""
        now = _now(now)
        with self._tx() as conn:
            row = _row(conn, ticket_id)
            if row.status not in (Status.RESOLVED, Status.ESCALATED):
                raise InvalidTransition(f"ticket {ticket_id} is {row.status}, not closed")
            if (
                row.status == Status.RESOLVED
                and conn.execute(
                    sa.select(tickets.c.id).where(
                        tickets.c.key == row.key, tickets.c.status != Status.RESOLVED
                    )
                ).first()
            ):
                raise InvalidTransition(f"a newer ticket for {row.key} is already live")
            _reopen(conn, row, now, actor)
            self._place(conn, ticket_id, row.scope, now)
            return _ticket(conn, ticket_id)

    def resolve(
        self, ticket_id: int, note: str, resolved_by: str = "human", now: datetime | None = None
    ) -> Ticket:
        """Close a ticket by hand. A session working on it is interrupted."""
        return self._close_by_hand(ticket_id, Status.RESOLVED, resolved_by, note, now)

    def escalate(
        self, ticket_id: int, reason: str, actor: str = "human", now: datetime | None = None
    ) -> Ticket:
        return self._close_by_hand(ticket_id, Status.ESCALATED, actor, reason, now)

    def _close_by_hand(
        self, ticket_id: int, status: Status, actor: str, note: str, now: datetime | None
    ) -> Ticket:
        now = _now(now)
        with self._tx() as conn:
            row = _row_and_session(conn, ticket_id)
            if row.status not in LIVE or row.status == status:
                raise InvalidTransition(f"ticket {ticket_id} is already {row.status}")
            _interrupt(conn, ticket_id, now, f"ticket {status} by {actor}")
            _close(conn, ticket_id, now, status, actor, note)
            return _ticket(conn, ticket_id)

    # -- reading ------------------------------------------------------------------------

    def ticket(self, ticket_id: int) -> Ticket:
        with self._tx(readonly=True) as conn:
            return _ticket(conn, ticket_id)

    def tickets(
        self, status: Status | None = None, limit: int | None = None, scope: str | None = None
    ) -> list[Ticket]:
        query = sa.select(tickets).order_by(tickets.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(tickets.c.status == status)
        if scope is not None:
            query = query.where(tickets.c.scope == scope)
        with self._tx(readonly=True) as conn:
            return [_to_ticket(r) for r in conn.execute(query)]

    def live(self, subject: str | None = None, scope: str | None = None) -> list[Ticket]:
        """Tickets still in play (open, working or escalated): the ones the monitor clears."""
        query = sa.select(tickets).where(tickets.c.status.in_(LIVE)).order_by(tickets.c.id)
        if subject is not None:
            query = query.where(tickets.c.subject == subject)
        if scope is not None:
            query = query.where(tickets.c.scope == scope)
        with self._tx(readonly=True) as conn:
            return [_to_ticket(r) for r in conn.execute(query)]

    def events(self, ticket_id: int) -> list[TicketEvent]:
        query = sa.select(ticket_events).where(ticket_events.c.ticket_id == ticket_id)
        with self._tx(readonly=True) as conn:
            return [TicketEvent(**r._mapping) for r in conn.execute(query.order_by("id"))]

    def session(self, session_id: int) -> Session:
        with self._tx(readonly=True) as conn:
            return _session(conn, session_id)

    def sessions(self, ticket_id: int | None = None, limit: int | None = None) -> list[Session]:
        query = sa.select(sessions).order_by(sessions.c.id.desc()).limit(limit)
        if ticket_id is not None:  # every session that held it: claimed, or joined
            held = sa.select(ticket_events.c.session_id).where(
                ticket_events.c.ticket_id == ticket_id, ticket_events.c.kind == "claimed"
            )
            query = query.where(sa.or_(sessions.c.ticket_id == ticket_id, sessions.c.id.in_(held)))
        with self._tx(readonly=True) as conn:
            return [_to_session(r) for r in conn.execute(query)]

    # -- the audit trail ----------------------------------------------------------------

    def append_audit(
        self,
        session_id: int,
        kind: AuditKind,
        content: str,
        *,
        summary: str | None = None,
        tool: str | None = None,
        params: Mapping[str, Any] | None = None,
        exit_code: int | None = None,
        duration_ms: int | None = None,
        now: datetime | None = None,
    ) -> AuditEntry:
        """Append one entry to the hash-chained audit trail."""
        try:
            with self._tx() as conn:
                return audit.append(
                    conn,
                    session_id,
                    AuditKind(kind),
                    content,
                    summary=summary,
                    tool=tool,
                    params=dict(params) if params is not None else None,
                    exit_code=exit_code,
                    duration_ms=duration_ms,
                    now=_now(now),
                )
        except IntegrityError as exc:  # the foreign key: there is no such session
            raise NotFound(f"no session with id {session_id}") from exc

    def audit_entries(self, session_id: int) -> list[AuditEntry]:
        with self._tx(readonly=True) as conn:
            _session(conn, session_id)
            return audit.entries(conn, session_id)

    def verify_audit(self) -> audit.Verification:
        with self._tx(readonly=True) as conn:
            return audit.verify(conn)

    # -- the approval gate ----------------------------------------------------------------

    def request_approval(
        self,
        session_id: int,
        command: str,
        reasoning: str,
        verdict: str,
        why: str,
        mode: str,
        now: datetime | None = None,
    ) -> Approval:
        """Ask a human to approve ``command``, with the classifier's verdict and why."""
        with self._tx() as conn:
            _session(conn, session_id)
            return approvals.request(
                conn, session_id, command, reasoning, verdict, why, mode, _now(now)
            )

    def decide_approval(
        self,
        approval_id: int,
        status: ApprovalStatus,
        by: str,
        reason: str = "",
        now: datetime | None = None,
    ) -> Approval:
        """Approve, deny or time out a pending request; a second decision is refused."""
        if status == ApprovalStatus.PENDING:
            raise ValueError("a decision cannot make a request pending")
        with self._tx() as conn:
            return approvals.decide(conn, approval_id, status, by, reason, _now(now))

    def approval(self, approval_id: int) -> Approval:
        with self._tx(readonly=True) as conn:
            return approvals.get(conn, approval_id)

    def approvals(
        self,
        status: ApprovalStatus | None = None,
        *,
        session_id: int | None = None,
        ticket_id: int | None = None,
        subject: str | None = None,
        limit: int | None = None,
    ) -> list[Approval]:
        """Requests, newest first."""
        with self._tx(readonly=True) as conn:
            return approvals.listing(conn, status, session_id, ticket_id, subject, limit)

    # -- eval runs ------------------------------------------------------------------------

    def start_eval_run(
        self,
        *,
        model: str,
        campaign: str | None,
        operator_version: str,
        prompt_sha256: str,
        scenarios: list[str],
        trials: int,
        parallel: int,
        now: datetime | None = None,
    ) -> EvalRun:
        values = {
            "model": model, "campaign": campaign, "started_at": _now(now),
            "operator_version": operator_version, "prompt_sha256": prompt_sha256,
            "scenarios": scenarios, "trials": trials, "parallel": parallel,
        }  # fmt: skip
        with self._tx() as conn:
            return evals.start(conn, values)

    def end_eval_run(self, run_id: int, now: datetime | None = None) -> EvalRun:
        with self._tx() as conn:
            return evals.end(conn, run_id, _now(now))

    def add_eval_trial(self, **values: Any) -> EvalTrial:
        """Record a finished trial; every field of ``EvalTrial`` but its id is needed."""
        with self._tx() as conn:
            return evals.add_trial(conn, values)

    def eval_run(self, run_id: int) -> EvalRun:
        with self._tx(readonly=True) as conn:
            return evals.run(conn, run_id)

    def eval_runs(self, limit: int | None = None) -> list[EvalRun]:
        """Runs, newest first."""
        with self._tx(readonly=True) as conn:
            return evals.runs(conn, limit)

    def eval_trials(self, run_id: int) -> list[EvalTrial]:
        with self._tx(readonly=True) as conn:
            evals.run(conn, run_id)
            return evals.trials(conn, run_id)


# -- helpers that run inside a caller's transaction -------------------------------------


def _now(now: datetime | None) -> datetime:
    """The time an operation happens: the caller's (checked to be aware), or now."""
    return as_utc(now) if now is not None else utcnow()


def _row(conn: sa.Connection, ticket_id: int) -> sa.Row[Any]:
    row = conn.execute(
        sa.select(tickets).where(tickets.c.id == ticket_id).with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"no ticket with id {ticket_id}")
    return row


def _row_and_session(conn: sa.Connection, ticket_id: int) -> sa.Row[Any]:
    """The ticket's row, locked after every ticket its session holds (in id order)."""
    holder = conn.execute(
        sa.select(tickets.c.session_id).where(
            tickets.c.id == ticket_id, tickets.c.status == Status.WORKING
        )
    ).scalar()
    if holder is not None:
        _lock_held(conn, holder)
    return _row(conn, ticket_id)


def _ticket(conn: sa.Connection, ticket_id: int) -> Ticket:
    return _to_ticket(_row(conn, ticket_id))


def _to_ticket(row: sa.Row[Any]) -> Ticket:
    values = dict(row._mapping)
    values["status"] = Status(values["status"])
    values["held"] = bool(values["held"])
    return Ticket(**values)


def _session(conn: sa.Connection, session_id: int) -> Session:
    row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()
    if row is None:
        raise NotFound(f"no session with id {session_id}")
    return _to_session(row)


def _to_session(row: sa.Row[Any]) -> Session:
    values = dict(row._mapping)
    values["outcome"] = Outcome(values["outcome"]) if values["outcome"] else None
    return Session(**values)


def _live_session(conn: sa.Connection, session_id: int, now: datetime) -> Session:
    """The session, if it still holds its ticket's claim and lease. Locks every ticket it
    holds, in id order, as every path that changes several of them does: no deadlock."""
    session = _session(conn, session_id)
    _lock_held(conn, session_id)
    row = _row(conn, session.ticket_id)
    if session.outcome is not None:
        raise LeaseLost(f"session {session_id} already ended ({session.outcome})")
    if row.status != Status.WORKING or row.session_id != session_id:
        raise LeaseLost(f"session {session_id} no longer holds ticket {row.id} ({row.status})")
    if row.lease_until is not None and row.lease_until < now:
        raise LeaseLost(f"the lease of session {session_id} on ticket {row.id} has expired")
    return session


def _event(
    conn: sa.Connection,
    ticket_id: int,
    now: datetime,
    kind: str,
    actor: str,
    detail: str = "",
    session_id: int | None = None,
) -> None:
    conn.execute(
        _INSERT_EVENT,
        {
            "ticket_id": ticket_id,
            "at": now,
            "kind": kind,
            "actor": actor,
            "detail": detail,
            "session_id": session_id,
        },
    )


def _reopen(
    conn: sa.Connection,
    row: sa.Row[Any],
    now: datetime,
    actor: str,
    detail: str = "",
    **also: Any,
) -> None:
    """Put a closed ticket back in the queue, forgetting how it was closed."""
    conn.execute(
        tickets.update()
        .where(tickets.c.id == row.id)
        .values(
            status=Status.OPEN,
            times_reopened=row.times_reopened + 1,
            resolved_at=None,
            resolved_by=None,
            resolution=None,
            cleared_at=None,
            **also,
        )
    )
    _event(conn, row.id, now, "reopened", actor, detail)


def _close(
    conn: sa.Connection,
    ticket_id: int,
    now: datetime,
    status: Status,
    by: str,
    note: str,
    session_id: int | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "claimed_by": None, "lease_until": None}
    if status == Status.RESOLVED:
        values.update(resolved_at=now, resolved_by=by, resolution=note)
    conn.execute(tickets.update().where(tickets.c.id == ticket_id).values(values))
    _event(conn, ticket_id, now, str(status), by, note, session_id)


def _finish_session(
    conn: sa.Connection,
    session_id: int,
    now: datetime,
    outcome: Outcome,
    summary: str,
    **usage: Any,
) -> None:
    conn.execute(
        sessions.update()
        .where(sessions.c.id == session_id)
        .values(ended_at=now, outcome=outcome, summary=summary, **usage)
    )
    approvals.expire(conn, session_id, f"the session ended {outcome}", now)


def _holder(conn: sa.Connection, incident: int, now: datetime) -> Any:
    """The live session working an incident: its id (as ``session_id``), worker and lease.
    Its row is locked, so a session that is ending finishes first and is not joined; one
    whose lease ran out is not joined either."""
    row = conn.execute(
        sa.select(tickets.c.session_id)
        .where(
            tickets.c.incident_id == incident,
            tickets.c.status == Status.WORKING,
            tickets.c.lease_until >= now,
        )
        .limit(1)
    ).first()
    if row is None:
        return None
    live = conn.execute(
        sa.select(sessions.c.id)
        .where(sessions.c.id == row.session_id, sessions.c.outcome.is_(None))
        .with_for_update()
    ).scalar()
    if live is None:
        return None
    return conn.execute(  # a session's tickets share its worker and lease
        sa.select(tickets.c.session_id, tickets.c.claimed_by, tickets.c.lease_until)
        .where(tickets.c.session_id == live, tickets.c.status == Status.WORKING)
        .limit(1)
    ).first()


def _requeue(conn: sa.Connection, ticket_id: int, lease: datetime | None = None) -> None:
    """Put a ticket back in the queue; with ``lease``, not claimable before then."""
    conn.execute(
        tickets.update()
        .where(tickets.c.id == ticket_id)
        .values(status=Status.OPEN, claimed_by=None, lease_until=lease)
    )


def _lock_held(conn: sa.Connection, session_id: int) -> list[int]:
    """The tickets a session still holds, locked, in id order."""
    return list(
        conn.execute(
            sa.select(tickets.c.id)
            .where(tickets.c.session_id == session_id, tickets.c.status == Status.WORKING)
            .order_by(tickets.c.id)
            .with_for_update()
        ).scalars()
    )


def _interrupt(conn: sa.Connection, ticket_id: int, now: datetime, why: str) -> list[int]:
    """End every still-running session that holds the ticket as interrupted, and put the
    other tickets it held back in the queue; return the sessions' ids."""
    row = _row(conn, ticket_id)
    running = sa.select(sessions.c.id).where(sessions.c.outcome.is_(None))
    ids = sorted(
        set(conn.execute(running.where(sessions.c.ticket_id == ticket_id)).scalars())
        | set(conn.execute(running.where(sessions.c.id == row.session_id)).scalars())
    )
    for sid in ids:
        _finish_session(conn, sid, now, Outcome.INTERRUPTED, why)
        for other in _lock_held(conn, sid):
            if other != ticket_id:
                _requeue(conn, other)
                _event(conn, other, now, "released", "store", why, sid)
    return ids
