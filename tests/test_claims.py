"""Claims under real concurrency: separate processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import raw_sql
from operator_ai.store import Outcome, Status, Store, Violation

WORKER = str(Path(__file__).with_name("claim_worker.py"))
TICKETS = 2400
WORKERS = 8


def _fill(store: Store, incidents: int, size: int) -> dict[int, str]:
    """``incidents`` labs, each with ``size`` tickets opened together; each ticket's lab."""
    scopes = {}
    for i in range(incidents):
        for n in range(size):
            ticket, _ = store.report_violation(
                Violation("etcd", "member_down", f"n{n}", "down"), scope=f"lab{i}"
            )
            scopes[ticket.id] = ticket.scope
    return scopes


def _drain(db_url: str, go: Path) -> list[list[list[int]]]:
    """Eight worker processes claim, all at once, until nothing is left; each one's claims."""
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "drain", db_url, f"w{i}", str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    try:
        for p in procs:  # every worker has opened the store and waits at the line
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        go.touch()
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert all(p.returncode == 0 for p in procs)
    return [json.loads(out) for out in outputs]


@pytest.mark.parametrize("size", [1, 3], ids=["tickets", "incidents"])
def test_eight_processes_claim_each_ticket_exactly_once(
    db_url: str, tmp_path: Path, size: int
) -> None:
    """One ticket per lab: every claim takes one. Three per lab, opened together: every claim
    takes one lab's incident whole, and no two workers split one."""
    with Store(db_url) as store:
        scopes = _fill(store, TICKETS // size, size)
    per_worker = _drain(db_url, tmp_path / "go")
    claims = [ids for worker in per_worker for ids in worker]
    claimed = [tid for ids in claims for tid in ids]

    assert sorted(claimed) == sorted(scopes)
    assert set(Counter(claimed).values()) == {1}, "a ticket was claimed twice"
    assert sum(1 for claims in per_worker if claims) >= 4, "the workers did not actually contend"
    assert all(len(ids) == size for ids in claims), "an incident was split"
    assert all(len({scopes[tid] for tid in ids}) == 1 for ids in claims)
    with Store(db_url) as store:
        assert not store.tickets(Status.OPEN, limit=1)
    [(sessions,)] = raw_sql(db_url, "SELECT count(*) FROM sessions")
    [(claimed_events,)] = raw_sql(
        db_url, "SELECT count(*) FROM ticket_events WHERE kind = 'claimed'"
    )
    assert sessions == len(claims) == TICKETS // size
    assert claimed_events == TICKETS


def test_killed_worker_loses_its_claim_after_the_lease(db_url: str) -> None:
    with Store(db_url) as store:
        store.report_violation(Violation("etcd", "no_leader", "cluster", "no leader"))
        with subprocess.Popen(
            [sys.executable, WORKER, "hold", db_url, "doomed", "4"],
            stdout=subprocess.PIPE,
            text=True,
        ) as worker:
            try:
                held = json.loads(worker.stdout.readline())  # type: ignore[union-attr]
                os.kill(worker.pid, signal.SIGKILL)
            finally:
                worker.kill()
                worker.wait()
        assert worker.returncode == -signal.SIGKILL

        assert store.release_expired() == [], "the lease has not run out yet"
        assert store.ticket(held["ticket"]).status == Status.WORKING
        assert store.claim("rescuer", 60) is None

        deadline = time.monotonic() + 20
        released: list[int] = []
        while not released and time.monotonic() < deadline:
            time.sleep(0.5)
            released = store.release_expired()
        assert released == [held["ticket"]]

        ticket = store.ticket(held["ticket"])
        assert ticket.status == Status.OPEN and ticket.claimed_by is None
        session = store.session(held["session"])
        assert session.outcome == Outcome.INTERRUPTED and session.ended_at is not None
        assert "lease_expired" in [e.kind for e in store.events(ticket.id)]
        rescue = store.claim("rescuer", 60)
        assert rescue is not None and rescue.ticket.id == ticket.id
