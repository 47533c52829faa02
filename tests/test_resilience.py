"""The store stays consistent when the disk fills up or a writer is killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import raw_sql
from lab_helpers import wait_for
from operator_ai.errors import StoreUnavailable
from operator_ai.store import AuditKind, Store, Violation

WORKER = str(Path(__file__).with_name("claim_worker.py"))


def _claimed_session(store: Store) -> int:
    store.report_violation(Violation("etcd", "member_down", "n1", "down"))
    claim = store.claim("w1", 600)
    assert claim is not None
    return claim.session.id


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, so the disk really fills; needs root to mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_fails_cleanly_and_loses_nothing(small_disk: Path) -> None:
    url = f"sqlite:///{small_disk / 'operator.db'}"
    with Store(url) as store:
        sid = _claimed_session(store)
        for i in range(5):
            store.append_audit(sid, AuditKind.NOTE, f"before the disk filled {i}")
        filler = small_disk / "filler"
        # Unbuffered: a buffered file would try to flush its rest again on close, and fail.
        with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()

        with pytest.raises(StoreUnavailable, match="full") as caught:
            for _ in range(50):  # the WAL may have a little room left; fill it too
                store.append_audit(sid, AuditKind.TOOL_RESULT, "y" * 65536, exit_code=0)
        assert "Free space" in caught.value.hint

        filler.unlink()
        store.append_audit(sid, AuditKind.NOTE, "after space was freed")
        result = store.verify_audit()
        assert result.ok, result.reason
        entries = store.audit_entries(sid)
        assert entries[-1].content == "after space was freed"
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert raw_sql(url, "PRAGMA integrity_check") == [("ok",)]


def test_writer_killed_mid_append_leaves_an_intact_chain(db_url: str) -> None:
    with Store(db_url) as store:
        sid = _claimed_session(store)
    with subprocess.Popen(
        [sys.executable, WORKER, "append", db_url, str(sid)], stdout=subprocess.PIPE, text=True
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "appending\n"
            with Store(db_url) as reader:  # kill it once it has appended for a while
                wait_for(lambda: len(reader.audit_entries(sid)) > 10, timeout=60,
                         what="the writer to append")  # fmt: skip
            os.kill(writer.pid, signal.SIGKILL)
        finally:
            writer.kill()
            writer.wait()
    with Store(db_url) as store:
        result = store.verify_audit()
        assert result.ok, result.reason
        assert result.checked > 10, "the writer should have appended for a while"
        store.append_audit(sid, AuditKind.NOTE, "the next worker carries on")
        assert store.verify_audit().checked == result.checked + 1
