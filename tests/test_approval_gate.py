"""The approval gate inside the agent loop, with a scripted model and real commands on the
host: what waits and what does not, a denial, a timeout, a budget spent waiting. A listener
plays the human, deciding when the agent says it waits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent_helpers import claim, recording, scripted, shell
from operator_ai.agent import Agent, Budget
from operator_ai.agent.prompts import system_prompt
from operator_ai.approval.gate import ALWAYS, MODE_TEXT, NEVER, WRITES, Gate
from operator_ai.config import Settings
from operator_ai.sandbox.host import HostSandbox
from operator_ai.store import ApprovalStatus, AuditKind, Claim, Outcome, Store
from operator_ai.store.approvals import TOOL

KEY = "etcd:member_down:etcd2"
Listener = Callable[[str, dict[str, object]], None]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'operator.db'}")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.db) as s:
        yield s


def human(store: Store, decide: Callable[[int, str], None], clear_after: int = 1) -> Listener:
    """Decides each request as it is made; plays the monitor after ``clear_after`` results."""
    results = []

    def listener(kind: str, data: dict[str, object]) -> None:
        if kind == "approval":
            decide(int(str(data["approval"])), str(data["command"]))
        if kind == "result":
            results.append(data)
            if len(results) >= clear_after:
                store.clear(KEY)

    return listener


def run(store: Store, spec: str, settings: Settings, mode: str, listener: Listener,
        timeout: float = 600.0, **options: object) -> tuple[Outcome, Claim]:  # fmt: skip
    model = recording(spec, settings)
    c = claim(store)
    agent = Agent(store=store, model=model, sandbox=HostSandbox(), subject="etcd",
                  briefing="(a test cluster)", settle_seconds=0.5, listener=listener,
                  gate=Gate(store, mode, timeout, poll=0.05), **options)  # type: ignore[arg-type]  # fmt: skip
    outcome = agent.run(c)
    run.model = model  # type: ignore[attr-defined]
    return outcome, c


def events(store: Store, c: Claim) -> list[str]:
    """The session's audit trail, as approval events and commands, in order."""
    found = []
    for e in store.audit_entries(c.session.id):
        if e.tool == TOOL and e.params:
            found.append(f"{e.params['event']} #{e.params['approval']}")
        elif e.kind in (AuditKind.TOOL_CALL, AuditKind.TOOL_RESULT):
            found.append(f"{e.kind} {e.content.splitlines()[0] if e.content else ''}")
    return found


def test_in_writes_mode_reads_run_at_once_and_an_approved_write_runs_exactly(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    made = tmp_path / "made"
    spec = scripted(tmp_path / "s.yaml", shell(f"cat {settings.db} > /dev/null; echo read"),
                    shell(f"touch {made}"), {"text": "Done."})  # fmt: skip

    def approve(approval_id: int, command: str) -> None:
        assert command == f"touch {made}"
        store.decide_approval(approval_id, ApprovalStatus.APPROVED, "alice", "fine")

    outcome, c = run(store, spec, settings, WRITES, human(store, approve, clear_after=2))
    assert outcome == Outcome.RESOLVED and made.exists()
    [approval] = store.approvals(session_id=c.session.id)
    assert approval.status == ApprovalStatus.APPROVED and approval.verdict == "writes"
    assert events(store, c) == [
        f"tool_call cat {settings.db} > /dev/null; echo read", "tool_result read",
        f"requested #{approval.id}", f"approved #{approval.id}",
        f"tool_call touch {made}", "tool_result ",
    ]  # fmt: skip
    assert store.verify_audit().ok


def test_a_denied_command_never_runs_and_the_model_reads_the_reason(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    marker = tmp_path / "marker"
    spec = scripted(tmp_path / "s.yaml", shell(f"touch {marker}"), shell("echo other way"),
                    {"text": "Done another way."})  # fmt: skip

    def deny(approval_id: int, command: str) -> None:
        if command.startswith("touch"):
            store.decide_approval(approval_id, ApprovalStatus.DENIED, "bob", "no files here")
        else:
            store.decide_approval(approval_id, ApprovalStatus.APPROVED, "bob", "")

    outcome, c = run(store, spec, settings, ALWAYS, human(store, deny))
    assert outcome == Outcome.RESOLVED  # the session went on, and its other way worked
    assert not marker.exists()
    told = run.model.sent[1][-1]  # type: ignore[attr-defined]
    assert "a human denied this command" in str(told) and "no files here" in str(told)
    calls = [e.content for e in store.audit_entries(c.session.id) if e.kind == AuditKind.TOOL_CALL]
    assert calls == ["echo other way"]  # in always mode even this one waited, and ran once approved
    assert [a.status for a in store.approvals(session_id=c.session.id)] == [
        ApprovalStatus.APPROVED, ApprovalStatus.DENIED]  # fmt: skip


def test_a_request_nobody_decides_times_out_as_a_denial(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    marker = tmp_path / "marker"
    spec = scripted(tmp_path / "s.yaml", shell(f"touch {marker}"), {"text": "ESCALATE: blocked"})
    outcome, c = run(store, spec, settings, WRITES, human(store, lambda i, c: None), timeout=0.5)
    assert outcome == Outcome.ESCALATED and not marker.exists()
    [approval] = store.approvals(session_id=c.session.id)
    assert approval.status == ApprovalStatus.TIMED_OUT and approval.decided_by == "operator"
    assert approval.reason == "no decision within 0.5 s"
    told = str(run.model.sent[1][-1])  # type: ignore[attr-defined]
    assert "no decision within 0.5 s; it counts as denied" in told


def test_a_session_whose_time_runs_out_while_it_waits_is_escalated(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("touch never"), {"text": "Done."})
    outcome, c = run(store, spec, settings, WRITES, human(store, lambda i, c: None),
                     budget=Budget(max_minutes=0.02))  # fmt: skip
    assert outcome == Outcome.ESCALATED
    assert "time budget spent" in (store.session(c.session.id).summary or "")
    [approval] = store.approvals(session_id=c.session.id)
    assert approval.status == ApprovalStatus.TIMED_OUT
    assert "budget ran out while it waited" in (approval.reason or "")


def test_in_never_mode_nothing_waits_and_the_prompt_names_the_mode(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    made = tmp_path / "made"
    spec = scripted(tmp_path / "s.yaml", shell(f"touch {made}"), {"text": "Done."})
    outcome, c = run(store, spec, settings, NEVER, human(store, lambda i, c: None))
    assert outcome == Outcome.RESOLVED and made.exists()
    assert not store.approvals(session_id=c.session.id)
    assert MODE_TEXT[NEVER] == ""
    assert MODE_TEXT[WRITES] in system_prompt("etcd", "(b)", 120, MODE_TEXT[WRITES])
    assert "every command before it runs" in MODE_TEXT[ALWAYS]
