"""Ticket lifecycle rules, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from operator_ai.errors import InvalidTransition, LeaseLost, NotFound
from operator_ai.store import AuditKind, Outcome, Status, Store, Violation

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def down(target: str = "n1", severity: str = "warning", **kw: object) -> Violation:
    return Violation("etcd", "member_down", target, f"{target} is down", severity, **kw)  # type: ignore[arg-type]


def test_open_then_update_keeps_one_ticket(store: Store) -> None:
    first, action = store.report_violation(
        down(evidence={"health": False}, first_seen_at=T0 - timedelta(seconds=7)), now=T0
    )
    assert action == "opened"
    assert first.key == "etcd:member_down:n1"
    assert first.status == Status.OPEN
    assert first.time_to_detect == 7.0
    assert first.opened_at == T0 and first.opened_at.tzinfo is not None
    assert first.evidence == {"health": False}

    second, action = store.report_violation(down(), now=T0 + timedelta(seconds=5))
    assert action == "updated"
    assert second.id == first.id
    assert second.occurrences == 2
    assert second.last_seen_at == T0 + timedelta(seconds=5)
    assert len(store.tickets()) == 1
    assert [e.kind for e in store.events(first.id)] == ["opened"]


def test_clear_resolves_unclaimed_ticket(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    cleared = store.clear(ticket.key, now=T0 + timedelta(seconds=30))
    assert cleared is not None
    assert cleared.status == Status.RESOLVED
    assert cleared.resolved_by == "monitor"
    assert store.clear(ticket.key) is None, "nothing live is left to clear"


def test_return_within_window_reopens_same_ticket(db_url: str) -> None:
    with Store(db_url, reopen_window=60) as store:
        ticket, _ = store.report_violation(down(), now=T0)
        store.clear(ticket.key, now=T0 + timedelta(seconds=10))
        again, action = store.report_violation(down(), now=T0 + timedelta(seconds=40))
        assert action == "reopened"
        assert again.id == ticket.id
        assert again.status == Status.OPEN
        assert again.times_reopened == 1
        assert again.resolved_at is None

        store.clear(ticket.key, now=T0 + timedelta(seconds=50))
        later, action = store.report_violation(down(), now=T0 + timedelta(seconds=500))
        assert action == "opened", "outside the window a new ticket opens"
        assert later.id != ticket.id


def test_claim_takes_most_severe_first_and_skips_held(store: Store) -> None:
    # Three labs, so three incidents.
    info, _ = store.report_violation(down("n1", "info"), now=T0, scope="a")
    crit, _ = store.report_violation(
        down("n2", "critical"), now=T0 + timedelta(seconds=1), scope="b"
    )
    held, _ = store.report_violation(down("n3", "critical"), now=T0, scope="c")
    store.hold(held.id)

    claim = store.claim("w1", lease_seconds=60, model="scripted:x", now=T0 + timedelta(seconds=2))
    assert claim is not None
    assert claim.ticket.id == crit.id
    assert claim.ticket.status == Status.WORKING
    assert claim.ticket.claimed_by == "w1"
    assert claim.session.worker == "w1" and claim.session.outcome is None
    second = store.claim("w2", lease_seconds=60)
    assert second is not None and second.ticket.id == info.id
    assert store.claim("w3", lease_seconds=60) is None


def test_monitor_clear_on_claimed_ticket_waits_for_agent(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    claim = store.claim("w1", 60, now=T0)
    assert claim is not None
    marked = store.clear(ticket.key, now=T0 + timedelta(seconds=5))
    assert marked is not None
    assert marked.status == Status.WORKING and marked.cleared_at is not None

    back, action = store.report_violation(down(), now=T0 + timedelta(seconds=6))
    assert action == "updated" and back.cleared_at is None

    done = store.end_session(
        claim.session.id,
        Outcome.RESOLVED,
        "restarted n1",
        steps=4,
        tokens_in=900,
        tokens_out=120,
        cost_usd=0.01,
        now=T0 + timedelta(seconds=9),
    )
    assert done.status == Status.RESOLVED and done.resolved_by == "agent"
    session = store.session(claim.session.id)
    assert session.outcome == Outcome.RESOLVED
    assert (session.steps, session.tokens_in, session.tokens_out) == (4, 900, 120)
    kinds = [e.kind for e in store.events(ticket.id)]
    assert kinds == ["opened", "claimed", "cleared", "violation_returned", "resolved"]


def test_failed_session_requeues_with_backoff(store: Store) -> None:
    store.report_violation(down(), now=T0)
    claim = store.claim("w1", 60, now=T0)
    assert claim is not None
    ticket = store.end_session(
        claim.session.id, Outcome.FAILED, "model API down", backoff_seconds=30, now=T0
    )
    assert ticket.status == Status.OPEN and ticket.claimed_by is None
    assert store.claim("w2", 60, now=T0 + timedelta(seconds=10)) is None, "still backing off"
    assert store.claim("w2", 60, now=T0 + timedelta(seconds=31)) is not None


def test_escalated_session_leaves_ticket_for_a_human(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    claim = store.claim("w1", 60, now=T0)
    assert claim is not None
    escalated = store.end_session(claim.session.id, Outcome.ESCALATED, "needs a new disk", now=T0)
    assert escalated.status == Status.ESCALATED
    assert store.claim("w2", 60) is None
    _, action = store.report_violation(down())
    assert action == "updated", "an escalated ticket stays the live one for its key"
    reopened = store.reopen(ticket.id)
    assert reopened.status == Status.OPEN and reopened.times_reopened == 1


def test_hold_takes_ticket_back_from_worker(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    claim = store.claim("w1", 60, now=T0)
    assert claim is not None
    held = store.hold(ticket.id)
    assert held.held and held.status == Status.OPEN and held.claimed_by is None
    assert store.session(claim.session.id).outcome == Outcome.INTERRUPTED
    with pytest.raises(LeaseLost):
        store.renew(claim.session.id, 60)
    with pytest.raises(InvalidTransition):
        store.hold(ticket.id)
    assert not store.unhold(ticket.id).held


def test_human_resolve_and_invalid_transitions(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    with pytest.raises(InvalidTransition):
        store.reopen(ticket.id)
    resolved = store.resolve(ticket.id, "replaced the member by hand")
    assert resolved.resolved_by == "human"
    assert resolved.resolution == "replaced the member by hand"
    with pytest.raises(InvalidTransition):
        store.resolve(ticket.id, "again")
    with pytest.raises(NotFound):
        store.hold(999_999)


def test_lease_renewal_and_expiry(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    claim = store.claim("w1", lease_seconds=30, now=T0)
    assert claim is not None
    lease = store.renew(claim.session.id, 30, now=T0 + timedelta(seconds=20))
    assert lease == T0 + timedelta(seconds=50)
    assert store.release_expired(now=T0 + timedelta(seconds=45)) == []
    assert store.release_expired(now=T0 + timedelta(seconds=51)) == [ticket.id]
    assert store.ticket(ticket.id).status == Status.OPEN
    assert store.session(claim.session.id).outcome == Outcome.INTERRUPTED
    with pytest.raises(LeaseLost):
        store.end_session(claim.session.id, Outcome.RESOLVED)
    assert "lease_expired" in [e.kind for e in store.events(ticket.id)]


def test_naive_timestamps_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.report_violation(down(), now=datetime(2026, 1, 1, 12, 0))


def test_human_escalation_interrupts_the_working_session(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    claim = store.claim("w1", 60, now=T0)
    assert claim is not None
    escalated = store.escalate(ticket.id, "paging the on-call DBA", now=T0)
    assert escalated.status == Status.ESCALATED and escalated.claimed_by is None
    assert store.session(claim.session.id).outcome == Outcome.INTERRUPTED
    assert store.events(ticket.id)[-1].detail == "paging the on-call DBA"
    with pytest.raises(LeaseLost):
        store.end_session(claim.session.id, Outcome.RESOLVED, now=T0)


def test_scopes_keep_the_same_key_apart_for_reports_clears_and_claims(store: Store) -> None:
    """Two labs (or eval trials) of one subject: the same violation is a ticket in each."""
    seen = down("etcd2")
    a, opened_a = store.report_violation(seen, scope="lab-a")
    b, opened_b = store.report_violation(seen, scope="lab-b")
    assert (opened_a, opened_b) == ("opened", "opened") and a.id != b.id
    assert (a.scope, b.scope) == ("lab-a", "lab-b")
    assert [t.id for t in store.live(scope="lab-b")] == [b.id]
    assert [t.id for t in store.tickets(scope="lab-a")] == [a.id]

    claim = store.claim("worker-b", 60, scope="lab-b")
    assert claim is not None and claim.ticket.id == b.id
    assert store.claim("worker-b", 60, scope="lab-b") is None  # lab-a's is not offered

    cleared = store.clear(seen.key, scope="lab-a")
    assert cleared is not None and cleared.status == Status.RESOLVED
    assert store.ticket(b.id).status == Status.WORKING  # the other scope's is untouched
    # Without a scope, a report and a clear are the subject's, as before scopes existed.
    plain, _ = store.report_violation(seen)
    assert plain.scope == "etcd" and plain.id not in (a.id, b.id)
    assert store.clear(seen.key) is not None


def _incident(store: Store) -> tuple[int, int]:
    """Two tickets of one lab, ten seconds apart: one incident."""
    first, _ = store.report_violation(down("n1", "critical"), now=T0)
    errors = Violation("etcd", "workload_errors", "cluster", "12% of requests fail")
    second, _ = store.report_violation(errors, now=T0 + timedelta(seconds=10))
    return first.id, second.id


def test_tickets_that_open_close_together_are_claimed_as_one_incident(store: Store) -> None:
    first, second = _incident(store)
    assert store.ticket(second).incident_id == store.ticket(first).incident_id == first
    late, _ = store.report_violation(down("n3"), now=T0 + timedelta(seconds=100))
    assert store.ticket(late.id).incident_id == late.id, "past the window: its own incident"

    claim = store.claim("w1", 600, now=T0 + timedelta(seconds=101))
    assert claim is not None and claim.ticket.id == first
    assert [t.id for t in claim.tickets] == [first, second]
    assert all(t.status == Status.WORKING and t.session_id == claim.session.id
               for t in claim.tickets)  # fmt: skip
    other = store.claim("w2", 60, now=T0 + timedelta(seconds=101))
    assert other is not None and [t.id for t in other.tickets] == [late.id]
    assert store.claim("w3", 60, now=T0 + timedelta(seconds=101)) is None

    # A ticket opening while the session works joins it, past the window too.
    joined, _ = store.report_violation(down("n2"), now=T0 + timedelta(seconds=200))
    assert joined.status == Status.WORKING and joined.session_id == claim.session.id
    assert [e.kind for e in store.events(joined.id)] == ["opened", "joined", "claimed"]
    assert [t.id for t in store.session_tickets(claim.session.id)] == [first, second, joined.id]
    assert claim.session.id in [s.id for s in store.sessions(joined.id)]

    lease = store.renew(claim.session.id, 60, now=T0 + timedelta(seconds=201))
    assert {t.lease_until for t in store.session_tickets(claim.session.id)} == {lease}
    store.end_session(claim.session.id, Outcome.RESOLVED, "fixed", now=T0 + timedelta(seconds=250))
    assert {t.status for t in store.incident(first)} == {Status.RESOLVED}


def test_a_failed_or_broken_session_gives_back_the_whole_incident(store: Store) -> None:
    first, second = _incident(store)
    claim = store.claim("w1", 60, now=T0 + timedelta(seconds=11))
    assert claim is not None
    store.end_session(claim.session.id, Outcome.FAILED, "model error", backoff_seconds=30,
                      now=T0 + timedelta(seconds=20))  # fmt: skip
    assert {t.status for t in store.incident(first)} == {Status.OPEN}
    assert store.claim("w2", 60, now=T0 + timedelta(seconds=21)) is None, "in backoff"
    again = store.claim("w2", 60, now=T0 + timedelta(seconds=51))
    assert again is not None and len(again.tickets) == 2

    # Holding one ticket takes the session off the incident; the rest goes back to the queue.
    store.hold(second, now=T0 + timedelta(seconds=52))
    assert store.session(again.session.id).outcome == Outcome.INTERRUPTED
    assert store.ticket(first).status == Status.OPEN
    assert "released" in [e.kind for e in store.events(first)]
    third = store.claim("w3", 60, now=T0 + timedelta(seconds=53))
    assert third is not None and [t.id for t in third.tickets] == [first]

    # Unheld, a ticket goes back to the session working its incident; a worker that dies
    # loses every ticket it held.
    assert store.unhold(second, now=T0 + timedelta(seconds=54)).session_id == third.session.id
    assert store.release_expired(now=T0 + timedelta(seconds=200)) == [first, second]
    assert store.session(third.session.id).outcome == Outcome.INTERRUPTED


def test_the_last_fix_is_the_newest_session_an_agent_resolved_on_the_key(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    assert store.last_fix(ticket) is None
    claim = store.claim("w1", 60, now=T0)
    assert claim is not None
    store.append_audit(claim.session.id, AuditKind.REASONING, "long", summary="restarted n1")
    store.end_session(claim.session.id, Outcome.RESOLVED, "verified", now=T0)
    back, action = store.report_violation(down(), now=T0 + timedelta(seconds=60))
    assert action == "reopened"
    last = store.last_fix(back)
    assert last is not None and last[0].id == claim.session.id and last[1] == "restarted n1"
    elsewhere, _ = store.report_violation(down(), now=T0, scope="another-lab")
    assert store.last_fix(elsewhere) is None, "history stays within its scope"


def test_no_incident_is_split_by_a_backoff_a_late_ticket_or_an_unverified_join(
    store: Store,
) -> None:
    first, second = _incident(store)
    claim = store.claim("w1", 600, now=T0 + timedelta(seconds=11))
    assert claim is not None
    store.end_session(claim.session.id, Outcome.FAILED, "model error", backoff_seconds=60,
                      now=T0 + timedelta(seconds=20))  # fmt: skip
    # A ticket that joins during the backoff waits with the rest.
    late, _ = store.report_violation(down("n2"), now=T0 + timedelta(seconds=30))
    assert late.incident_id == first and late.lease_until == T0 + timedelta(seconds=80)
    assert store.claim("w2", 600, now=T0 + timedelta(seconds=31)) is None
    again = store.claim("w2", 600, now=T0 + timedelta(seconds=81))
    assert again is not None and [t.id for t in again.tickets] == [first, second, late.id]

    # A session that resolves takes only what the monitor saw hold; a ticket that joined
    # after its last check goes back to the queue.
    for key in ("etcd:member_down:n1", "etcd:workload_errors:cluster", "etcd:member_down:n2"):
        store.clear(key, now=T0 + timedelta(seconds=90))
    joined, _ = store.report_violation(down("n3"), now=T0 + timedelta(seconds=95))
    assert joined.session_id == again.session.id
    verified = [first, second, late.id]
    store.end_session(again.session.id, Outcome.RESOLVED, "fixed", verified=verified,
                      now=T0 + timedelta(seconds=96))  # fmt: skip
    assert [store.ticket(t).status for t in (first, second, late.id)] == [Status.RESOLVED] * 3
    assert store.ticket(joined.id).status == Status.OPEN

    # Reopened by hand while its incident is worked, a ticket joins that session.
    claim = store.claim("w3", 600, now=T0 + timedelta(seconds=97))
    assert claim is not None and [t.id for t in claim.tickets] == [joined.id]
    back = store.reopen(first, now=T0 + timedelta(seconds=98))
    assert (back.status, back.session_id) == (Status.WORKING, claim.session.id)


def test_a_ticket_that_reopens_draws_the_next_one_into_its_incident(store: Store) -> None:
    ticket, _ = store.report_violation(down(), now=T0)
    store.clear(ticket.key, now=T0 + timedelta(seconds=5))  # unclaimed: resolved by the monitor
    back, action = store.report_violation(down(), now=T0 + timedelta(seconds=300))
    assert action == "reopened" and back.placed_at == T0 + timedelta(seconds=300)
    errors = Violation("etcd", "workload_errors", "cluster", "errors")
    other, _ = store.report_violation(errors, now=T0 + timedelta(seconds=310))
    assert other.incident_id == back.incident_id == ticket.id
