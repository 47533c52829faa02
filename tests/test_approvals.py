"""Approvals in the store and from the CLI: requested and decided once, in the audit chain,
and never decided twice, not even by two processes at the same moment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import raw_sql, run_cli
from operator_ai.errors import InvalidTransition
from operator_ai.store import ApprovalStatus, Outcome, Store, Violation
from operator_ai.store.approvals import TOOL, sha256

WORKER = str(Path(__file__).with_name("claim_worker.py"))


def session(store: Store) -> int:
    store.report_violation(Violation("etcd", "member_down", "etcd2", "etcd2 does not answer"))
    claim = store.claim("w1", lease_seconds=600)
    assert claim is not None
    return claim.session.id


def test_a_request_is_decided_once_and_both_are_in_the_audit_chain(store: Store) -> None:
    sid = session(store)
    asked = store.request_approval(sid, "supervisorctl start etcd2", "bring it back", "writes",
                                   "it starts the lab's programs", "writes")  # fmt: skip
    assert asked.pending and asked.command_sha256 == sha256("supervisorctl start etcd2")
    assert [a.id for a in store.approvals(ApprovalStatus.PENDING)] == [asked.id]
    assert [a.id for a in store.approvals(ApprovalStatus.PENDING, subject="etcd")] == [asked.id]
    assert store.approvals(ApprovalStatus.PENDING, subject="ratelimiter") == []
    decided = store.decide_approval(asked.id, ApprovalStatus.APPROVED, "alice@host", "ok")
    assert decided.status == ApprovalStatus.APPROVED and decided.decided_by == "alice@host"
    assert decided.decided_at is not None and not store.approvals(ApprovalStatus.PENDING)

    with pytest.raises(InvalidTransition, match=f"approval #{asked.id} was already decided"):
        store.decide_approval(asked.id, ApprovalStatus.DENIED, "bob@host", "no")
    assert store.approval(asked.id).status == ApprovalStatus.APPROVED

    entries = [e for e in store.audit_entries(sid) if e.tool == TOOL]
    assert [e.params and e.params["event"] for e in entries] == ["requested", "approved"]
    assert "supervisorctl start etcd2" in entries[0].content
    assert store.verify_audit().ok


def test_two_processes_deciding_at_once_record_one_decision_each(
    db_url: str, tmp_path: Path
) -> None:
    with Store(db_url) as store:
        sid = session(store)
        ids = [store.request_approval(sid, f"touch tmp/{n}", "", "writes", "w", "writes").id
               for n in range(40)]  # fmt: skip
    go = tmp_path / "go"
    deciders = [subprocess.Popen([sys.executable, WORKER, "decide", db_url, name, str(go)],
                                 stdout=subprocess.PIPE, text=True)
                for name in ("approver-a", "denier-d")]  # fmt: skip
    try:
        for proc in deciders:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        won = [json.loads(proc.communicate(timeout=120)[0]) for proc in deciders]
    finally:
        for proc in deciders:
            proc.kill()
    assert sorted(won[0] + won[1]) == ids  # every request decided, by exactly one of them
    with Store(db_url) as store:
        for approval_id in ids:
            expected = ApprovalStatus.APPROVED if approval_id in won[0] else ApprovalStatus.DENIED
            assert store.approval(approval_id).status == expected
        events = [
            e.params["event"] for e in store.audit_entries(sid) if e.tool == TOOL and e.params
        ]
        decisions = [event for event in events if event != "requested"]
        assert len(decisions) == len(ids)
        assert store.verify_audit().ok
    rows = raw_sql(db_url, "SELECT count(*) FROM approvals WHERE status = 'pending'")
    assert rows == [(0,)]


def test_the_cli_lists_shows_approves_and_refuses_a_second_decision(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'operator.db'}") as store:
        sid = session(store)
        first = store.request_approval(
            sid,
            "supervisorctl start etcd2",
            "bring etcd2 back",
            "writes",
            "it starts the lab's programs",
            "writes",
        ).id
        second = store.request_approval(sid, "rm -rf data/etcd2", "wipe it", "writes",
                                        "rm changes state", "writes").id  # fmt: skip
    listed = run_cli("approvals", "list", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [a["id"] for a in json.loads(listed.stdout)] == [second, first]
    shown = run_cli("approvals", "show", str(first), home=tmp_path)
    assert "supervisorctl start etcd2" in shown.stdout and "bring etcd2 back" in shown.stdout
    assert f"operator approvals approve {first}" in shown.stdout

    approved = run_cli("approvals", "approve", str(first), "--note", "looks right", home=tmp_path)
    assert approved.returncode == 0 and "approved" in approved.stdout, approved.stderr
    again = run_cli("approvals", "deny", str(first), "--reason", "too late", home=tmp_path)
    assert again.returncode == 1 and "already decided: approved" in again.stderr

    no_reason = run_cli("approvals", "deny", str(second), "--reason", " ", home=tmp_path)
    assert no_reason.returncode == 2 and "--reason must say why" in no_reason.stderr
    denied = run_cli("approvals", "deny", str(second), "--reason", "never wipe a member",
                     "--json", home=tmp_path)  # fmt: skip
    assert json.loads(denied.stdout)["status"] == "denied"
    assert json.loads(denied.stdout)["reason"] == "never wipe a member"

    ticket = run_cli("tickets", "show", "1", "--json", home=tmp_path)
    assert json.loads(ticket.stdout)["pending_approvals"] == []
    missing = run_cli("approvals", "show", "99", home=tmp_path)
    assert missing.returncode == 1 and "no approval #99" in missing.stderr


def test_what_an_ended_session_waited_for_times_out_with_it(store: Store) -> None:
    sid = session(store)
    asked = store.request_approval(sid, "supervisorctl start etcd2", "", "writes", "w", "writes")
    store.end_session(sid, Outcome.INTERRUPTED, "the worker was asked to stop")
    expired = store.approval(asked.id)
    assert expired.status == ApprovalStatus.TIMED_OUT and expired.decided_by == "operator"
    assert expired.reason == "the session ended interrupted"
    assert not store.approvals(ApprovalStatus.PENDING)
    with pytest.raises(InvalidTransition, match="already decided: timed_out"):
        store.decide_approval(asked.id, ApprovalStatus.APPROVED, "late@host", "")
