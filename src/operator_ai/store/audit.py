"""The audit trail: one SHA-256 hash chain over every entry of every session.

Each entry's hash covers its own fields and the previous entry's hash, and entries are
numbered without gaps, so editing, deleting, inserting or reordering any entry breaks the
chain at that entry. The ``audit_head`` row holds the newest id and hash: appends lock it
(which orders concurrent writers) and ``verify`` checks that the tail was not cut off.
The chain cannot stop someone who rewrites every later hash and the head as well;
exporting the head hash elsewhere (a log, a ticket) pins it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from operator_ai.store.records import AuditEntry, AuditKind
from operator_ai.store.schema import audit_entries, audit_head

GENESIS = "0" * 64
SUMMARY_CHARS = 160

# Built once: appends are the hot path, and building statements costs more than running them.
_LOCK_HEAD = sa.select(audit_head).where(audit_head.c.id == 1).with_for_update()
_LAST_SEQ = sa.select(sa.func.coalesce(sa.func.max(audit_entries.c.seq), 0)).where(
    audit_entries.c.session_id == sa.bindparam("sid")
)
_INSERT = audit_entries.insert()
_MOVE_HEAD = (
    audit_head.update()
    .where(audit_head.c.id == 1)
    .values(last_id=sa.bindparam("new_id"), last_hash=sa.bindparam("new_hash"))
)


@dataclass(frozen=True, slots=True)
class Verification:
    checked: int
    bad_entry: int | None = None
    session_id: int | None = None
    seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.bad_entry is None and not self.reason


def entry_hash(fields: dict[str, Any]) -> str:
    """The SHA-256 of an entry's fields (all but ``hash`` itself) in canonical JSON."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    body["at"] = body["at"].isoformat()
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def summarize(content: str) -> str:
    """The deterministic one-line stand-in used when no summary is given."""
    line = " ".join(content.split())
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


def append(
    conn: sa.Connection,
    session_id: int,
    kind: AuditKind,
    content: str,
    *,
    summary: str | None,
    tool: str | None,
    params: dict[str, Any] | None,
    exit_code: int | None,
    duration_ms: int | None,
    now: datetime,
) -> AuditEntry:
    head = conn.execute(_LOCK_HEAD).one()
    seq = conn.execute(_LAST_SEQ, {"sid": session_id}).scalar_one()
    # PostgreSQL text cannot hold NUL; the escaped form is what gets hashed and kept.
    content = content.replace("\x00", "\\x00")
    fields: dict[str, Any] = {
        "id": head.last_id + 1,
        "session_id": session_id,
        "seq": seq + 1,
        "kind": str(kind),
        "summary": (summary or summarize(content)).replace("\x00", "\\x00"),
        "content": content,
        "tool": tool,
        "params": json.loads(json.dumps(params, default=str)) if params is not None else None,
        "exit_code": exit_code,
        "duration_ms": duration_ms,
        "at": now,
        "prev_hash": head.last_hash or GENESIS,
    }
    fields["hash"] = entry_hash(fields)
    conn.execute(_INSERT, fields)
    conn.execute(_MOVE_HEAD, {"new_id": fields["id"], "new_hash": fields["hash"]})
    return _to_entry(fields)


def entries(conn: sa.Connection, session_id: int) -> list[AuditEntry]:
    query = sa.select(audit_entries).where(audit_entries.c.session_id == session_id)
    return [_to_entry(dict(r._mapping)) for r in conn.execute(query.order_by("seq"))]


def last_summary(conn: sa.Connection, session_id: int, kind: AuditKind) -> str | None:
    """The summary of a session's newest entry of ``kind``."""
    return conn.execute(
        sa.select(audit_entries.c.summary)
        .where(audit_entries.c.session_id == session_id, audit_entries.c.kind == kind)
        .order_by(audit_entries.c.seq.desc())
        .limit(1)
    ).scalar()


def scan(conn: sa.Connection) -> Generator[AuditEntry, None, None]:
    result = conn.execution_options(yield_per=1000).execute(
        sa.select(audit_entries).order_by(audit_entries.c.id)
    )
    try:
        for row in result:
            yield _to_entry(dict(row._mapping))
    finally:
        result.close()  # a server-side cursor on PostgreSQL, even when the caller stops early


def verify(conn: sa.Connection) -> Verification:
    """Walk the whole chain; report the first entry that does not check out."""
    prev_hash, expected_id, checked = GENESIS, 1, 0
    seqs: dict[int, int] = {}
    with closing(scan(conn)) as chain:
        for entry in chain:
            fields = {name: getattr(entry, name) for name in AuditEntry.__slots__}
            fields["kind"] = str(entry.kind)
            reason = ""
            if entry.id != expected_id:
                reason = f"entries {expected_id}..{entry.id - 1} are missing"
            elif entry.prev_hash != prev_hash:
                reason = "its previous-hash link does not match the entry before it"
            elif entry_hash(fields) != entry.hash:
                reason = "its content does not match its hash"
            elif entry.seq != seqs.get(entry.session_id, 0) + 1:
                reason = f"sequence number {entry.seq} is out of order in its session"
            if reason:
                return Verification(checked, entry.id, entry.session_id, entry.seq, reason)
            seqs[entry.session_id] = entry.seq
            prev_hash, expected_id, checked = entry.hash, entry.id + 1, checked + 1
    head = conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).one()
    if head.last_id != expected_id - 1 or (head.last_hash or GENESIS) != prev_hash:
        return Verification(
            checked,
            reason=f"the chain ends at entry {expected_id - 1} but the head "
            f"records entry {head.last_id}: entries were removed from the end",
        )
    return Verification(checked)


def _to_entry(values: dict[str, Any]) -> AuditEntry:
    values = dict(values)
    values["kind"] = AuditKind(values["kind"])
    return AuditEntry(**values)
