"""The agent loop against the scripted model and the host sandbox: bad model output,
verification, budgets, giving up, stopping and lost leases. Here the test plays the monitor
by clearing the ticket in the store; tests/test_agent_lab.py runs the real monitor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent_helpers import Recording, claim, recording, scripted, shell
from conftest import run_cli
from fake_providers import (
    anthropic_error,
    anthropic_message,
    fake_provider,
    text_block,
    tool_use_block,
)
from operator_ai.agent import Agent, Budget, Summarizer
from operator_ai.agent.prompts import for_model
from operator_ai.config import Settings
from operator_ai.models import ToolResults, UserMessage
from operator_ai.models.spec import load_model
from operator_ai.sandbox import CommandResult
from operator_ai.sandbox.host import HostSandbox
from operator_ai.store import AuditKind, Claim, Outcome, Status, Store, Violation

KEY = "etcd:member_down:etcd2"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'operator.db'}")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.db) as s:
        yield s


def agent(store: Store, model: Recording, **options: object) -> Agent:
    return Agent(
        store=store,
        model=model,
        sandbox=HostSandbox(),
        subject="etcd",
        briefing="(a test cluster)",
        settle_seconds=0.5,
        **options,  # type: ignore[arg-type]
    )


def clear_after_commands(store: Store, count: int = 1):  # type: ignore[no-untyped-def]
    """A listener that plays the monitor: the violation is gone after ``count`` commands."""
    seen = []

    def listener(kind: str, data: dict[str, object]) -> None:
        if kind == "result":
            seen.append(data)
            if len(seen) >= count:
                store.clear(KEY)

    return listener


def test_a_fix_the_monitor_confirms_resolves_the_ticket_with_a_complete_audit(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("echo restarting etcd2"), {"text": "Fixed."})
    model = recording(spec, settings)
    c = claim(store)
    outcome = agent(store, model, listener=clear_after_commands(store)).run(c)

    assert outcome == Outcome.RESOLVED
    ticket = store.ticket(c.ticket.id)
    assert (ticket.status, ticket.resolved_by) == (Status.RESOLVED, "agent")
    entries = store.audit_entries(c.session.id)
    kinds = [e.kind for e in entries]
    call = kinds.index(AuditKind.TOOL_CALL)
    assert kinds[call + 1] == AuditKind.TOOL_RESULT  # logged before it ran, result after
    assert entries[call].params == {"command": "echo restarting etcd2", "reasoning": "test step"}
    assert entries[call + 1].exit_code == 0
    assert "restarting etcd2" in entries[call + 1].content
    assert any(e.kind == AuditKind.VERIFICATION and "confirmed" in e.content for e in entries)
    assert store.session(c.session.id).outcome == Outcome.RESOLVED
    assert store.verify_audit().ok


def test_a_command_is_in_the_audit_trail_before_it_runs(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    # The command itself reads the audit trail, from its own process, while it runs.
    (tmp_path / "look.py").write_text(
        f"import sqlite3\nq = \"select count(*) from audit_entries where kind = 'tool_call'\"\n"
        f"print(sqlite3.connect({str(tmp_path / 'operator.db')!r}).execute(q).fetchone())\n"
    )
    look = f"python3 {tmp_path / 'look.py'}"
    spec = scripted(tmp_path / "s.yaml", shell(look), {"text": "ESCALATE: done looking"})
    c = claim(store)
    agent(store, recording(spec, settings)).run(c)
    [result] = [e for e in store.audit_entries(c.session.id) if e.kind == AuditKind.TOOL_RESULT]
    assert result.exit_code == 0, result.content
    assert "(1,)" in result.content  # its own tool_call was committed before it started


def test_bad_model_output_is_recorded_and_answered_with_errors(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(
        tmp_path / "s.yaml",
        {"text": "", "calls": [{"name": "shell", "arguments": "{not json"}]},
        {"text": "", "calls": [{"name": "kubectl", "arguments": {"command": "get pods"}}]},
        {"text": ""},
        {"text": "", "calls": [{"name": "shell", "arguments": {"reasoning": "no command"}}]},
        shell("echo fine"),
        {"text": "Done."},
    )
    model = recording(spec, settings)
    c = claim(store)
    outcome = agent(store, model, listener=clear_after_commands(store)).run(c)

    assert outcome == Outcome.RESOLVED
    answers = "\n".join(model.tool_results())
    assert "unknown tool 'kubectl'" in answers
    assert "no command given" in answers
    assert answers.count("error:") == 3
    assert any("empty" in t for t in model.user_texts())
    notes = [e.content for e in store.audit_entries(c.session.id) if e.kind == AuditKind.NOTE]
    assert sum("rejected tool call" in n for n in notes) == 3
    assert any("empty reply" in n for n in notes)


def test_claiming_success_without_a_fix_never_resolves_and_escalates_on_budget(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(
        tmp_path / "s.yaml",
        shell("true"),
        {"text": "I restarted it, all good."},
        {"text": "It is definitely fixed now."},
    )
    model = recording(spec, settings)
    c = claim(store)
    outcome = agent(store, model, budget=Budget(max_steps=3)).run(c)

    assert outcome == Outcome.ESCALATED
    assert any("Verification failed" in t and KEY in t for t in model.user_texts())
    ticket = store.ticket(c.ticket.id)
    assert ticket.status == Status.ESCALATED
    session = store.session(c.session.id)
    assert "step budget spent: 3 of 3" in (session.summary or "")
    unconfirmed = [
        e for e in store.audit_entries(c.session.id)
        if e.kind == AuditKind.VERIFICATION and e.content.startswith("not confirmed")
    ]  # fmt: skip
    assert len(unconfirmed) == 2


def test_the_model_can_give_up_honestly(tmp_path: Path, settings: Settings, store: Store) -> None:
    spec = scripted(tmp_path / "s.yaml", {"text": "ESCALATE: the disk is gone; needs a human"})
    c = claim(store)
    outcome = agent(store, recording(spec, settings)).run(c)
    assert outcome == Outcome.ESCALATED
    assert store.session(c.session.id).summary == "the disk is gone; needs a human"


def test_token_and_cost_budgets_escalate(tmp_path: Path, settings: Settings, store: Store) -> None:
    turn = {**shell("true"), "usage": {"input_tokens": 600, "output_tokens": 100}}
    spec = scripted(tmp_path / "s.yaml", turn, turn, turn)
    c = claim(store)
    outcome = agent(store, recording(spec, settings), budget=Budget(max_tokens=1000)).run(c)
    assert outcome == Outcome.ESCALATED
    session = store.session(c.session.id)
    assert "token budget spent: 1,400 of 1,000" in (session.summary or "")
    assert (session.steps, session.tokens_in, session.tokens_out) == (2, 1200, 200)


def test_the_cost_budget_escalates_on_list_prices(settings: Settings, store: Store) -> None:
    # Only a priced model costs anything: the Anthropic adapter, against the loopback fake.
    # 200k input tokens of claude-sonnet-5-5 at $2 per million, 100 out at $10: $0.401 a turn.
    turn = anthropic_message(
        tool_use_block("toolu_1", "shell", {"command": "true", "reasoning": "look"}),
        stop_reason="tool_use", input_tokens=200_000, output_tokens=100,
    )  # fmt: skip
    with fake_provider() as server:
        server.always = turn
        keyed = Settings(home=settings.home, db=settings.db, anthropic_api_key=SecretStr("sk-x"))
        model = load_model(f"anthropic:claude-sonnet-5-5@{server.url}", keyed)
        c = claim(store)
        try:
            outcome = agent(store, Recording(model), budget=Budget(max_cost=0.75)).run(c)
        finally:
            model.close()
    assert outcome == Outcome.ESCALATED
    session = store.session(c.session.id)
    assert "cost budget spent: $0.8020 of $0.75" in (session.summary or "")
    assert session.steps == 2 and session.cost_usd == pytest.approx(0.802)


def test_thinking_is_audited_but_only_the_answer_can_give_up(
    settings: Settings, store: Store
) -> None:
    thought = {"type": "thinking", "thinking": "The disk is gone.", "signature": "c2ln"}
    with fake_provider() as server:
        server.always = anthropic_message(thought, text_block("ESCALATE: needs a new disk"))
        keyed = Settings(home=settings.home, db=settings.db, anthropic_api_key=SecretStr("sk-x"))
        model = load_model(f"anthropic:claude-sonnet-5-5@{server.url}", keyed)
        c = claim(store)
        try:
            outcome = agent(store, Recording(model)).run(c)
        finally:
            model.close()
    assert outcome == Outcome.ESCALATED
    assert store.session(c.session.id).summary == "needs a new disk"
    [reasoning] = [e for e in store.audit_entries(c.session.id) if e.kind == AuditKind.REASONING]
    assert reasoning.content == "The disk is gone.\nESCALATE: needs a new disk"


def test_the_time_budget_escalates_and_bounds_a_command(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("sleep 1"), shell("sleep 30"), shell("echo never"))
    c = claim(store)
    outcome = agent(store, recording(spec, settings), budget=Budget(max_minutes=2.5 / 60)).run(c)
    assert outcome == Outcome.ESCALATED
    assert "time budget spent" in (store.session(c.session.id).summary or "")
    entries = store.audit_entries(c.session.id)
    assert [e.content for e in entries if e.kind == AuditKind.TOOL_CALL] == ["sleep 1", "sleep 30"]
    # The 30 s command was cut where the budget ran out: 124 is the sandbox's timeout code.
    assert [e.exit_code for e in entries if e.kind == AuditKind.TOOL_RESULT] == [0, 124]


def test_a_stop_request_interrupts_and_releases_the_ticket(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("echo one"), shell("echo two"))
    c = claim(store)
    a = agent(store, recording(spec, settings))
    a.listener = lambda kind, data: a.stop.set() if kind == "result" else None
    assert a.run(c) == Outcome.INTERRUPTED
    assert store.ticket(c.ticket.id).status == Status.OPEN
    commands = [e for e in store.audit_entries(c.session.id) if e.kind == AuditKind.TOOL_CALL]
    assert [e.content for e in commands] == ["echo one"]


def test_a_ticket_taken_by_a_human_interrupts_the_session(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("echo one"), {"text": "Fixed."})
    c = claim(store)
    a = agent(store, recording(spec, settings))
    a.listener = lambda kind, data: store.hold(c.ticket.id) if kind == "result" else None
    assert a.run(c) == Outcome.INTERRUPTED
    ticket = store.ticket(c.ticket.id)
    assert ticket.held and ticket.status == Status.OPEN


def test_the_model_sees_a_capped_result_with_exit_code_and_stderr() -> None:
    big = "".join(f"line {i}\n" for i in range(20000))
    result = CommandResult(3, big, "boom: failed", 1234)
    text = for_model(result)
    assert text.startswith("exit code 3 after 1.2 s")
    assert "line 0\n" in text and "line 19999" in text
    assert "bytes left out" in text and "boom: failed" in text
    assert len(text) < 10_000


def test_agent_run_without_a_model_says_how_to_configure_one(tmp_path: Path) -> None:
    done = run_cli("agent", "run", "--once", home=tmp_path)
    assert done.returncode == 1
    assert "no model configured" in done.stderr
    for needle in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "--model", "scripted:"):
        assert needle in done.stderr


def test_agent_run_with_a_broken_script_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("turns: [{shell: 3}]")
    done = run_cli("agent", "run", "--once", "--model", f"scripted:{tmp_path / 'bad.yaml'}",
                   home=tmp_path)  # fmt: skip
    assert done.returncode == 1
    assert "bad.yaml" in done.stderr


def test_a_provider_that_stays_down_fails_the_session_and_backs_the_ticket_off(
    settings: Settings, store: Store
) -> None:
    with fake_provider() as server:
        server.always = anthropic_error(529, "overloaded_error", "Overloaded")
        spec = f"anthropic:claude-haiku-4-5@{server.url}"
        model = load_model(
            spec,
            Settings(home=settings.home, db=settings.db, anthropic_api_key=SecretStr("sk-ant-x")),
        )
        c = claim(store)
        try:
            outcome = agent(store, Recording(model)).run(c)
        finally:
            model.close()
        assert len(server.received) > 1  # retried before giving up

    assert outcome == Outcome.FAILED
    session = store.session(c.session.id)
    assert "HTTP 529 overloaded_error" in (session.summary or "")
    ticket = store.ticket(c.ticket.id)
    assert ticket.status == Status.OPEN
    assert store.claim("worker-2", 60) is None  # backing off, not claimable at once
    assert ticket.lease_until is not None
    assert (ticket.lease_until - datetime.now(UTC)).total_seconds() > 30


def test_summaries_come_from_the_small_model_beside_the_raw_record(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("seq 1 500"), {"text": "ESCALATE: stop here"})
    small = scripted(tmp_path / "small.yaml", {"text": "Ran seq.\nignored"},
                     {"text": "Printed 1 to 500."})  # fmt: skip
    c = claim(store)
    summarize = Summarizer(recording(small, settings))
    agent(store, recording(spec, settings), summarize=summarize).run(c)

    entries = {e.kind: e for e in reversed(store.audit_entries(c.session.id))}  # first of each
    assert entries[AuditKind.REASONING].summary == "Ran seq."
    assert entries[AuditKind.TOOL_RESULT].summary == "Printed 1 to 500."
    assert entries[AuditKind.TOOL_RESULT].content.splitlines()[-1] == "500"  # the raw record


def test_without_a_small_model_summaries_are_truncations(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("seq 1 500"), {"text": "ESCALATE: stop here"})
    c = claim(store)
    agent(store, recording(spec, settings)).run(c)
    result = next(e for e in store.audit_entries(c.session.id) if e.kind == AuditKind.TOOL_RESULT)
    assert result.summary.startswith("1 2 3 4 5")
    assert len(result.summary) < 200 and result.content.count("\n") >= 499


class BreaksOnSecondCommand:
    """The host sandbox, until its second command raises an error that is not Operator's."""

    name = "breaking"
    warning = None

    def __init__(self) -> None:
        self.calls = 0

    def run(self, command: str, timeout: float = 120.0) -> CommandResult:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("the sandbox broke in a way nobody wrapped")
        return HostSandbox().run(command, timeout)


def test_a_foreign_error_mid_session_fails_it_at_once_and_the_worker_goes_on(
    tmp_path: Path, store: Store
) -> None:
    import threading

    from operator_ai.agent.worker import work

    store.report_violation(Violation("etcd", "member_down", "etcd1", "etcd1 is down"))
    store.report_violation(Violation("etcd", "member_down", "etcd2", "etcd2 is down"), scope="b")
    steps = [shell("true"), shell("echo second"), shell("echo never")]
    spec = scripted(tmp_path / "s.yaml", *steps)
    stop, errors, built = threading.Event(), [], []

    def agent_for(c: Claim) -> Agent:
        built.append(c)
        if len(built) == 2:
            stop.set()  # the second ticket is the last the worker takes
            healthy = agent(store, recording(spec, Settings(home=tmp_path, db="sqlite://")))
            healthy.listener = lambda kind, data: (
                store.clear(c.ticket.key, scope=c.ticket.scope) if kind == "result" else None
            )
            return healthy
        broken = agent(store, recording(spec, Settings(home=tmp_path, db="sqlite://")))
        broken.sandbox = BreaksOnSecondCommand()
        return broken

    outcomes = work(store, "worker-1", agent_for, stop, model=spec, lease_seconds=60,
                    on_error=lambda name, exc: errors.append(exc))  # fmt: skip

    assert outcomes == [Outcome.FAILED, Outcome.RESOLVED]
    assert [type(e) for e in errors] == [RuntimeError]
    first = store.session(built[0].session.id)
    assert first.outcome == Outcome.FAILED and first.ended_at is not None
    assert "unexpected error: RuntimeError: the sandbox broke" in (first.summary or "")
    ticket = store.ticket(built[0].ticket.id)
    assert ticket.status == Status.OPEN  # back in the queue, after its backoff
    assert ticket.lease_until is not None and ticket.lease_until > datetime.now(UTC)
    trail = store.audit_entries(first.id)
    assert (
        trail[-1].kind == AuditKind.NOTE and "session failed: unexpected error" in trail[-1].content
    )
    assert store.verify_audit().ok
    assert store.session(built[1].session.id).outcome == Outcome.RESOLVED


class InterruptedOnFirstCommand:
    name = "interrupted"
    warning = None

    def run(self, command: str, timeout: float = 120.0) -> CommandResult:
        raise KeyboardInterrupt


def test_an_interrupt_mid_session_ends_it_interrupted_and_goes_on_up(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    spec = scripted(tmp_path / "s.yaml", shell("true"))
    c = claim(store)
    broken = agent(store, recording(spec, settings))
    broken.sandbox = InterruptedOnFirstCommand()
    with pytest.raises(KeyboardInterrupt):
        broken.run(c)
    session = store.session(c.session.id)
    assert session.outcome == Outcome.INTERRUPTED and session.ended_at is not None
    assert store.audit_entries(c.session.id)[-1].content.startswith("session interrupted")
    assert store.verify_audit().ok


def test_the_model_hears_of_tickets_that_join_hold_or_break_again_and_of_those_that_held(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    """The first message names a ticket of the incident the monitor cleared on its own before
    the claim; each tool result then says what changed since; the session resolves only
    when every ticket it holds is verified."""
    errors = Violation("etcd", "workload_errors", "workload", "9% of requests fail")
    blip, _ = store.report_violation(Violation("etcd", "member_slow", "etcd2", "slow"))
    store.report_violation(errors)
    store.clear(blip.key)  # unclaimed: the monitor resolves it on its own
    c = claim(store)
    assert [t.key for t in c.tickets] == ["etcd:workload_errors:workload", KEY]
    steps = [shell("echo one"), shell("echo two"), shell("echo three"), {"text": "Fixed."}]
    model = recording(scripted(tmp_path / "s.yaml", *steps), settings)
    leader = Violation("etcd", "no_leader", "cluster", "no leader")

    def monitor(kind: str, data: dict[str, object]) -> None:
        if kind != "result":
            return
        if "one" in str(data["output"]):  # a ticket opens and joins; one clears
            store.report_violation(leader)
            store.clear(KEY)
        elif "two" in str(data["output"]):  # the cleared one breaks again
            store.report_violation(Violation("etcd", "member_down", "etcd2", "down again"))
        else:  # everything holds
            for key in (KEY, errors.key, leader.key):
                store.clear(key)

    assert agent(store, model, listener=monitor).run(c) == Outcome.RESOLVED
    first = model.sent[0][0]
    assert isinstance(first, UserMessage) and first.text.startswith("Incident: 2 tickets")
    assert "already seen to hold again by the monitor on its own" in first.text
    assert f"#{blip.id} {blip.key}: slow" in first.text
    news = [m.text for m in model.sent[-1] if isinstance(m, ToolResults)]
    assert "A new ticket joined this incident" in news[0] and leader.key in news[0]
    assert f"The monitor now sees {KEY} hold since" in news[0]
    assert f"The monitor sees {KEY} broken again: down again" in news[1]
    assert all(f"The monitor now sees {k} hold since" in news[2] for k in (KEY, errors.key))
    assert {t.status for t in store.session_tickets(c.session.id)} == {Status.RESOLVED}
    assert len(store.session_tickets(c.session.id)) == 3
    notes = [e.content for e in store.audit_entries(c.session.id) if e.kind == AuditKind.NOTE]
    assert sum(n.startswith("told the model:") for n in notes) == 3
