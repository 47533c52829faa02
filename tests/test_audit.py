"""The hash-chained audit trail: appends, verification, and tampering caught by the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import raw_sql, run_cli
from operator_ai.errors import NotFound
from operator_ai.store import AuditKind, Store, Violation
from operator_ai.store.audit import GENESIS


def _session(store: Store, target: str = "n1") -> int:
    store.report_violation(Violation("etcd", "member_down", target, "down"), scope=target)
    claim = store.claim(f"worker-{target}", 60, model="scripted:test")
    assert claim is not None
    return claim.session.id


def _transcript(store: Store, session_id: int) -> None:
    store.append_audit(session_id, AuditKind.REASONING, "n1 is down; check the members.")
    store.append_audit(
        session_id,
        AuditKind.TOOL_CALL,
        "etcdctl member list",
        tool="shell",
        params={"command": "etcdctl member list", "reasoning": "who is up"},
    )
    store.append_audit(
        session_id,
        AuditKind.TOOL_RESULT,
        "a1, started, n1\nb2, started, n2",
        exit_code=0,
        duration_ms=42,
    )


def test_chain_links_entries_across_sessions(store: Store) -> None:
    first, second = _session(store, "n1"), _session(store, "n2")
    _transcript(store, first)
    _transcript(store, second)
    entries = store.audit_entries(first)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS
    assert entries[1].prev_hash == entries[0].hash
    assert entries[1].params == {"command": "etcdctl member list", "reasoning": "who is up"}
    assert entries[2].exit_code == 0 and entries[2].duration_ms == 42
    assert store.audit_entries(second)[0].prev_hash == entries[2].hash
    result = store.verify_audit()
    assert result.ok and result.checked == 6


def test_output_with_nul_bytes_is_kept_and_verifies(store: Store) -> None:
    sid = _session(store)
    entry = store.append_audit(sid, AuditKind.TOOL_RESULT, "bin\x00ary", exit_code=1)
    assert entry.content == "bin\\x00ary"
    assert store.verify_audit().ok


def test_edited_content_is_named_by_verify(db_url: str, tmp_path: Path) -> None:
    with Store(db_url) as store:
        sid = _session(store)
        _transcript(store, sid)
        _transcript(store, sid)
    before = run_cli("--db", db_url, "audit", "verify", home=tmp_path)
    assert before.returncode == 0, before.stderr
    assert "6 entries verified" in before.stdout

    raw_sql(db_url, "UPDATE audit_entries SET content = 'exit 0, all fine' WHERE id = 3")
    after = run_cli("--db", db_url, "audit", "verify", home=tmp_path)
    assert after.returncode == 1
    assert "entry 3 (session 1, #3)" in after.stdout
    assert "does not match its hash" in after.stdout
    as_json = run_cli("--db", db_url, "audit", "verify", "--json", home=tmp_path)
    assert as_json.returncode == 1
    assert '"bad_entry": 3' in as_json.stdout


def test_deleted_and_truncated_entries_are_caught(db_url: str) -> None:
    with Store(db_url) as store:
        sid = _session(store)
        _transcript(store, sid)
        _transcript(store, sid)
        raw_sql(db_url, "DELETE FROM audit_entries WHERE id = 6")
        tail = store.verify_audit()
        assert not tail.ok and "removed from the end" in tail.reason

        raw_sql(db_url, "DELETE FROM audit_entries WHERE id = 2")
        gap = store.verify_audit()
        assert not gap.ok and gap.bad_entry == 3 and "missing" in gap.reason


def test_relinked_forgery_is_caught(store: Store) -> None:
    """Rewriting an entry and recomputing its own hash still breaks the next link."""
    from operator_ai.store.audit import entry_hash

    sid = _session(store)
    _transcript(store, sid)
    victim = store.audit_entries(sid)[1]
    forged = {name: getattr(victim, name) for name in victim.__slots__}
    forged.update(kind=str(victim.kind), content="rm -rf /data (never happened)")
    new_hash = entry_hash(forged)
    raw_sql(
        store.url,
        f"UPDATE audit_entries SET content = '{forged['content']}', "
        f"hash = '{new_hash}' WHERE id = {victim.id}",
    )
    result = store.verify_audit()
    assert not result.ok and result.bad_entry == victim.id + 1
    assert "previous-hash link" in result.reason


def test_append_to_unknown_session_is_refused(store: Store) -> None:
    with pytest.raises(NotFound, match="no session with id 999"):
        store.append_audit(999, AuditKind.NOTE, "orphan")
    assert store.verify_audit().checked == 0
