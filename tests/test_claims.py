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

from conftest import raw_sql
from operator_ai.store import Outcome, Status, Store, Violation

WORKER = str(Path(__file__).with_name("claim_worker.py"))
TICKETS = 2000
WORKERS = 8


def _fill(store: Store, n: int) -> None:
    for i in range(n):
        store.report_violation(Violation("etcd", "member_down", f"n{i}", "down"))


def test_eight_processes_claim_each_ticket_exactly_once(db_url: str, tmp_path: Path) -> None:
    with Store(db_url) as store:
        _fill(store, TICKETS)
    go = tmp_path / "go"
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
    per_worker = [json.loads(out) for out in outputs]
    claimed = [tid for ids in per_worker for tid in ids]

    assert len(claimed) == TICKETS
    assert set(Counter(claimed).values()) == {1}, "a ticket was claimed twice"
    assert sum(1 for ids in per_worker if ids) >= 4, "the workers did not actually contend"
    with Store(db_url) as store:
        assert not store.tickets(Status.OPEN, limit=1)
    [(sessions,)] = raw_sql(db_url, "SELECT count(*) FROM sessions")
    [(claims,)] = raw_sql(db_url, "SELECT count(*) FROM ticket_events WHERE kind = 'claimed'")
    assert sessions == claims == TICKETS


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
