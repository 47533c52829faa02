"""The whole loop against a real etcd lab: a fault, the real monitor, the scripted model,
the bwrap sandbox in the lab's ops namespace, and verification. Also what happens when a
worker is killed or told to stop in the middle of a command."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_helpers import Recording, scripted, shell
from conftest import run_cli
from lab_helpers import ROOT, lab_home, live, running_lab, running_monitor, wait_for
from operator_ai.agent import Budget, work
from operator_ai.agent.loop import Agent, Listener
from operator_ai.agent.worker import AgentOptions, agent_factory
from operator_ai.config import Settings
from operator_ai.lab import Lab
from operator_ai.lab import injections as chaos
from operator_ai.models import ToolResults, UserMessage
from operator_ai.store import ApprovalStatus, AuditKind, Claim, Outcome, Status, Store

pytestmark = [
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(not ROOT, reason="the sandbox in the lab's ops namespace needs root"),
]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_home() as home, running_lab(home) as lab:
        yield lab


@pytest.fixture
def settings(lab: Lab, tmp_path: Path) -> Iterator[Settings]:
    home = lab.path.parent.parent
    db = home / f"{tmp_path.name}.db"
    try:
        yield Settings(home=home, db=f"sqlite:///{db}", lease_seconds=3)
    finally:
        lab.heal()
        db.unlink(missing_ok=True)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.db) as s:
        yield s


def kill_follower(lab: Lab, store: Store, target: str | None = None) -> str:
    leader = lab.leader()
    target = target or next(n.name for n in lab.state.nodes if n.name != leader)
    chaos.inject(lab, "kill", target, {})
    wait_for(lambda: live(store, f"etcd:member_down:{target}"), what="the member_down ticket")
    return target


def run_one(settings: Settings, store: Store, spec: str, **options: object) -> list[Outcome]:
    return recorded(settings, store, spec, lambda k, d: None, **options)[0]


def supervisorctl(lab: Lab, *args: str) -> str:
    return f"supervisorctl -c {lab.path}/supervisord.conf {' '.join(args)}"


def recorded(settings: Settings, store: Store, spec: str, listener: Listener, **options: object
             ) -> tuple[list[Outcome], list[Recording]]:  # fmt: skip
    """Work one incident, keeping what the model was sent."""
    stop, models = threading.Event(), []
    agent_for = agent_factory(settings, store, AgentOptions(model=spec, **options), stop,
                              listener)  # type: ignore[arg-type]  # fmt: skip

    def keeping(claim: Claim) -> Agent:
        agent = agent_for(claim)
        agent.model = Recording(agent.model)
        models.append(agent.model)
        return agent

    outcomes = work(store, "test-worker", keeping, stop, model=spec,
                    lease_seconds=settings.lease_seconds, once=True)  # fmt: skip
    return outcomes, models


def test_the_agent_restarts_a_killed_follower_and_the_monitor_confirms_it(
    lab: Lab, settings: Settings, store: Store, tmp_path: Path
) -> None:
    fix = [
        shell(supervisorctl(lab, "status"), "see which member is down"),
        shell(supervisorctl(lab, "start", "TARGET"), "start the member that died"),
        {"text": "TARGET had exited; I started it again."},
    ]
    with running_monitor(store, lab):
        target = kill_follower(lab, store)
        turns = [json.loads(json.dumps(t).replace("TARGET", target)) for t in fix]
        spec = scripted(tmp_path / "fix.yaml", *turns)
        outcomes, [model] = recorded(settings, store, spec, lambda k, d: None, settle_seconds=20)
    assert outcomes == [Outcome.RESOLVED]

    ticket = store.tickets()[0]
    assert (ticket.status, ticket.resolved_by) == (Status.RESOLVED, "agent")
    [session] = store.sessions(ticket.id)
    entries = store.audit_entries(session.id)
    calls = [e for e in entries if e.kind == AuditKind.TOOL_CALL and e.tool == "shell"]
    results = [e for e in entries if e.kind == AuditKind.TOOL_RESULT and e.tool == "shell"]
    assert [c.content for c in calls] == [supervisorctl(lab, "status"),
                                         supervisorctl(lab, "start", target)]  # fmt: skip
    assert [r.exit_code for r in results] == [3, 0]  # status exits 3 while a program is down
    assert target in results[0].content and f"{target}: started" in results[1].content
    assert any(e.kind == AuditKind.REASONING for e in entries)
    assert any(e.kind == AuditKind.VERIFICATION and "confirmed" in e.content for e in entries)
    assert lab.cluster.pid(target) is not None
    verified = run_cli("audit", "verify", home=settings.home, env={"OPERATOR_DB": settings.db})
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Before the first turn the platform ran the subject's diagnostics in the sandbox, as its
    # own commands, and the model's first message carries what they printed.
    snapshot = [e for e in entries if e.tool == "snapshot"]
    ran = [e for e in snapshot if e.kind == AuditKind.TOOL_CALL]
    assert [e.content for e in ran] == lab.subject.diagnostics(lab.cluster, [target])
    assert all(e.params == {"command": e.content, "by": "platform"} for e in ran)
    assert max(e.seq for e in snapshot) < min(e.seq for e in calls)
    first = model.sent[0][0]
    assert isinstance(first, UserMessage)
    assert (
        "What the platform looked at" in first.text and f"etcd:member_down:{target}" in first.text
    )
    status = next(e for e in snapshot if e.kind == AuditKind.TOOL_RESULT)
    assert status.exit_code == 3 and f"{target}" in status.content and "EXITED" in status.content
    assert re.search(rf"{target}\s+EXITED", first.text), first.text[:3000]
    assert "History" not in first.text
    # The briefing says what the shell has: the tools' versions, read from the binaries, and
    # the scratch directory that outlives a command.
    assert "etcdctl version: 3." in model.system and "etcd Version: 3." in model.system
    assert f"{lab.path.resolve()}/tmp is a scratch directory" in model.system
    shown = run_cli("audit", "show", str(session.id), home=settings.home,
                    env={"OPERATOR_DB": settings.db})  # fmt: skip
    assert "(platform) $ supervisorctl" in shown.stdout, shown.stdout

    # The same member dies again: the first message recalls the fix, dated, as history.
    lab.heal()  # closes the first injection, which the agent's restart left on record
    with running_monitor(store, lab):
        assert kill_follower(lab, store, target) == target
        spec = scripted(tmp_path / "again.yaml", *turns)
        outcomes, [model] = recorded(settings, store, spec, lambda k, d: None, settle_seconds=20)
    assert outcomes == [Outcome.RESOLVED]
    first = model.sent[0][0]
    assert isinstance(first, UserMessage)
    history = first.text[first.text.index("History") :]
    assert f"etcd:member_down:{target}, resolved and verified: {target} had exited" in history


def test_an_incident_is_one_session_told_as_its_tickets_hold(
    lab: Lab, settings: Settings, store: Store, tmp_path: Path
) -> None:
    """Quorum loss under load opens several tickets at once: one worker claims them all, a
    second finds nothing, the model hears of each ticket the monitor sees hold again, and the
    session resolves only once every one is verified."""
    down = ["etcd1", "etcd2"]  # what quorum_loss kills: the first majority of the members
    expected = {*(f"etcd:member_down:{n}" for n in down), "etcd:workload_errors:workload"}
    stop_load = threading.Event()
    loader = threading.Thread(
        target=lab.subject.load, args=(lab.cluster, 50, None, lambda s: None, stop_load)
    )
    intruder: list[object] = []

    def listener(kind: str, data: dict[str, object]) -> None:
        if kind == "result" and "etcd2: started" in str(data["output"]):
            intruder.append(store.claim("intruder", 60))
            wait_for(
                lambda: all(t.cleared_at for t in store.session_tickets(int(data["session"]))),  # type: ignore[call-overload]
                timeout=120, what="the monitor to see every ticket hold",
            )  # fmt: skip

    with running_monitor(store, lab):
        loader.start()
        try:
            chaos.inject(lab, "quorum_loss", None, {})
            wait_for(lambda: all(live(store, k) for k in expected), timeout=90,
                     what=" and ".join(sorted(expected)))  # fmt: skip
            spec = scripted(
                tmp_path / "quorum.yaml",
                shell(supervisorctl(lab, "start", "etcd1"), "bring back a member"),
                shell(supervisorctl(lab, "start", "etcd2"), "and the other"),
                {"text": "Two members had exited; I started both."},
            )
            outcomes, [model] = recorded(settings, store, spec, listener, settle_seconds=30)
        finally:
            stop_load.set()
            loader.join(timeout=30)
    assert outcomes == [Outcome.RESOLVED]
    assert intruder == [None], "a second worker claimed a ticket of the incident"
    [session] = store.sessions(limit=1)
    held = store.session_tickets(session.id)
    assert expected <= {t.key for t in held}
    assert {t.status for t in held} == {Status.RESOLVED}
    assert len({t.incident_id for t in held}) == 1
    first = model.sent[0][0]
    assert isinstance(first, UserMessage)
    assert all(k in first.text for k in expected) and first.text.startswith("Incident:")
    told = [m.text for m in model.sent[-1] if isinstance(m, ToolResults) and m.text]
    news = "\n".join(told)
    for key in expected:
        assert re.search(rf"The monitor now sees {key} hold since \d\d:\d\d:\d\d UTC", news)


def test_claiming_success_without_fixing_is_not_verified_and_escalates(
    lab: Lab, settings: Settings, store: Store, tmp_path: Path
) -> None:
    with running_monitor(store, lab):
        target = kill_follower(lab, store)
        endpoints = ",".join(n.url() for n in lab.state.nodes)
        spec = scripted(
            tmp_path / "claim.yaml",
            shell(f"etcdctl --endpoints={endpoints} endpoint health", "look around"),
            {"text": "Everything is fine now."},
            {"text": "I am sure it is fixed."},
        )
        outcomes = run_one(settings, store, spec, settle_seconds=3, budget=Budget(max_steps=3))

    assert outcomes == [Outcome.ESCALATED]
    ticket = store.tickets()[0]
    assert ticket.status == Status.ESCALATED
    assert lab.cluster.pid(target) is None  # nothing was fixed, and nothing said otherwise
    [session] = store.sessions(ticket.id)
    assert "step budget spent" in (session.summary or "")
    verifications = [e.content for e in store.audit_entries(session.id)
                     if e.kind == AuditKind.VERIFICATION]  # fmt: skip
    assert sum(v.startswith("not confirmed") for v in verifications) == 2


def _worker(settings: Settings, spec: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
    env.update(OPERATOR_HOME=str(settings.home), OPERATOR_DB=settings.db,
               OPERATOR_LEASE_SECONDS=str(settings.lease_seconds))  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "operator_ai", "agent", "run", "--once", "--model", spec],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _running(store: Store, command: str) -> bool:
    return any(
        e.kind == AuditKind.TOOL_CALL and e.content == command
        for s in store.sessions()
        for e in store.audit_entries(s.id)
    )


def test_a_killed_worker_loses_its_ticket_and_another_finishes_it(
    lab: Lab, settings: Settings, store: Store, tmp_path: Path
) -> None:
    slow = "sleep 57.25"
    with running_monitor(store, lab):
        target = kill_follower(lab, store)
        worker = _worker(settings, scripted(tmp_path / "slow.yaml", shell(slow)))
        try:
            wait_for(lambda: _running(store, slow), what="the slow command to start")
        finally:
            worker.kill()
            worker.communicate()
        wait_for(lambda: not _processes_with(slow), timeout=10, what="the sandbox to die")

        fix = scripted(tmp_path / "fix.yaml", shell(supervisorctl(lab, "start", target)),
                       {"text": "Started it."})  # fmt: skip
        # The running monitor releases expired leases too, so wait for the outcome, not the call.
        wait_for(lambda: store.tickets()[0].status == Status.OPEN, timeout=10,
                 what="the lease to expire and the ticket to return to the queue")  # fmt: skip
        assert run_one(settings, store, fix, settle_seconds=20) == [Outcome.RESOLVED]

    ticket = store.tickets()[0]
    first, second = sorted(store.sessions(ticket.id), key=lambda s: s.id)
    assert first.outcome == Outcome.INTERRUPTED
    assert second.outcome == Outcome.RESOLVED
    assert (ticket.status, ticket.resolved_by) == (Status.RESOLVED, "agent")


def test_sigterm_ends_the_session_interrupted_and_releases_the_ticket(
    lab: Lab, settings: Settings, store: Store, tmp_path: Path
) -> None:
    slow = "sleep 3.25"
    with running_monitor(store, lab):
        kill_follower(lab, store)
        spec = scripted(tmp_path / "slow.yaml", shell(slow), shell("echo never"))
        worker = _worker(settings, spec)
        try:
            wait_for(lambda: _running(store, slow), what="the slow command to start")
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=60)
        finally:
            worker.kill()
    assert worker.returncode == 0, output
    ticket = store.tickets()[0]
    assert ticket.status == Status.OPEN and ticket.claimed_by is None
    [session] = store.sessions(ticket.id)
    assert session.outcome == Outcome.INTERRUPTED
    assert not _running(store, "echo never")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_in_writes_mode_a_read_runs_at_once_and_a_start_waits_for_the_cli_approval(
    lab: Lab, settings: Settings, store: Store, tmp_path: Path
) -> None:
    endpoints = ",".join(n.url() for n in lab.state.nodes)
    status = f"etcdctl --endpoints={endpoints} endpoint status"
    with running_monitor(store, lab):
        target = kill_follower(lab, store)
        start = supervisorctl(lab, "start", target)
        spec = scripted(
            tmp_path / "fix.yaml",
            shell(status, "see which member does not answer"),
            shell(start, "start the member that died"),
            {"text": f"{target} had exited; I started it again."},
        )
        outcomes: list[Outcome] = []

        def work_it() -> None:
            outcomes.extend(run_one(settings, store, spec, settle_seconds=20, approval="writes",
                                    approval_timeout=120))  # fmt: skip

        agent = threading.Thread(target=work_it)
        agent.start()
        try:
            wait_for(lambda: store.approvals(ApprovalStatus.PENDING), what="a request")
            [asked] = store.approvals(ApprovalStatus.PENDING)
            assert asked.command == start and asked.verdict == "writes"
            ran = [e.content for e in store.audit_entries(asked.session_id)
                   if e.kind == AuditKind.TOOL_CALL and e.tool == "shell"]  # fmt: skip
            assert ran == [status]  # the read ran at once; the start has not run
            assert lab.cluster.pid(target) is None
            approved = run_cli("approvals", "approve", str(asked.id), "--note", "go ahead",
                               home=settings.home, env={"OPERATOR_DB": settings.db})  # fmt: skip
            assert approved.returncode == 0, approved.stderr
        finally:
            agent.join(timeout=120)
    assert outcomes == [Outcome.RESOLVED]
    assert lab.cluster.pid(target) is not None
    ticket = store.ticket(asked.ticket_id)
    assert (ticket.status, ticket.resolved_by) == (Status.RESOLVED, "agent")
    entries = store.audit_entries(asked.session_id)
    # The snapshot's commands are all read-only: the gate lets every one of them run.
    assert len([e for e in entries if e.tool == "snapshot"]) == 2 * len(
        lab.subject.diagnostics(lab.cluster, [target])
    )
    trail = [(e.kind, (e.params or {}).get("event"), e.content.splitlines()[0])
             for e in entries if e.tool in ("approval", "shell")]  # fmt: skip
    assert [t[1] or t[0] for t in trail] == [
        AuditKind.TOOL_CALL, AuditKind.TOOL_RESULT, "requested", "approved",
        AuditKind.TOOL_CALL, AuditKind.TOOL_RESULT,
    ]  # fmt: skip
    assert trail[4][2] == start and f"{target}: started" in trail[5][2]
    verified = run_cli("audit", "verify", home=settings.home, env={"OPERATOR_DB": settings.db})
    assert verified.returncode == 0, verified.stdout + verified.stderr
