"""One trial: a scenario's incident in a healthy lab, worked by the model under test (or by
nobody), judged by the monitor, and measured from the fault.

    prepare    heal the lab (revert faults, start nodes), or reset it when that fails
    baseline   start the load, the monitor and the workers; wait until every invariant holds
    inject     resolve the scenario's aliases to nodes, inject each fault in order
    incident   wait for the expected ticket (TTD), then for every ticket's verified
               resolution (TTM), an escalation, a failed session, or the time limit
    settle     every invariant holds, no ticket opens and the load's errors stay in bound
    judge      no regression: no ticket opened after the agent's first command that was not
               already live before it

Each trial has its own ticket scope (`eval/RUN/SCENARIO/ATTEMPT`): its monitor and its
workers see only its tickets, so trials in parallel labs never share one.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from operator_ai import plugins
from operator_ai.approval.classify import classify
from operator_ai.clock import utcnow
from operator_ai.config import Settings
from operator_ai.core import Injection
from operator_ai.errors import OperatorError
from operator_ai.eval.scenario import ALIASES, Scenario
from operator_ai.lab import Lab
from operator_ai.lab import injections as chaos
from operator_ai.lab.injections import Injections
from operator_ai.lab.state import Progress
from operator_ai.run import Event, Runner
from operator_ai.store import AuditKind, EvalRun, EvalTrial, Outcome, Status, Store, Ticket
from operator_ai.store.records import TrialOutcome

POLL = 0.25
BASELINE_CYCLES = 3
"""Clean monitor cycles in a row before a fault: every invariant holds, no grace running."""
BASELINE_TIMEOUT = 60.0
BREACHES = ("opened", "reopened", "violation_returned")
"""The ticket events that mean an invariant broke (again)."""


class Interrupted(Exception):
    """The run was asked to stop: the trial is cleaned up and not recorded."""


class Ended(Exception):
    """How a trial ended, raised from wherever it became known."""

    def __init__(self, outcome: TrialOutcome, why: str) -> None:
        super().__init__(why)
        self.outcome, self.why = outcome, why


@dataclass
class Watch:
    """What the trial learns from its runner's events, on their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    first_command: datetime | None = None
    live_before: set[str] = field(default_factory=set)
    """What was already broken when the agent ran its first command: its tickets' keys, and
    the violations the monitor saw that a grace period kept from being tickets yet."""
    unverified: int = 0
    """Times the agent said it had fixed the fault and the monitor did not confirm it."""
    ops_errors: tuple[int, int] = (0, 0)


class Trial:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        lab: Lab,
        scenario: Scenario,
        run: EvalRun,
        attempt: int,
        model: str | None,
        progress: Progress,
        stop: threading.Event,
    ) -> None:
        self.settings, self.store, self.lab = settings, store, lab
        self.scenario, self.run, self.attempt, self.model = scenario, run, attempt, model
        self.progress, self.stop = progress, stop
        self.scope = f"eval/{run.id}/{scenario.name}/{attempt}"
        self.watch = Watch()
        self.targets: dict[str, str] = {}
        self.runner: Runner | None = None
        self.injected_at: datetime | None = None
        self.injected_mono: float | None = None
        self.detected_at: datetime | None = None
        self.mitigated_at: datetime | None = None
        self.error_rate: float | None = None
        self.watched = 0.0
        """Seconds from the last fault injected to the verdict: the incident, worked or not,
        and the settle window. The rest of a trial is the harness's own overhead."""

    def run_trial(self) -> EvalTrial | None:
        """The trial, recorded; None when the run was stopped before it ended."""
        started, clock = utcnow(), time.monotonic()
        runner: Runner | None = None
        watching: float | None = None
        where = "preparing the lab"
        try:
            self.prepare()
            where = "starting the load and the monitor"
            runner = self.runner = Runner(
                self.settings, self.store, self.lab, model=self.model, scope=self.scope,
                rate=self.scenario.load.rate, on_event=self._event, on_load=self._load,
            )  # fmt: skip
            runner.start()
            where = "waiting for a healthy baseline"
            self.baseline(runner)
            where = "injecting the faults"
            timed = self.inject()
            watching = time.monotonic()
            where = "watching the incident"
            self.incident(runner, timed)
            where = "the settle window"
            self.settle(runner)
            verdict = Ended(TrialOutcome.SUCCESS, self._success_note())
        except Ended as v:
            verdict = v
        except Interrupted:
            verdict = None
        except OperatorError as exc:
            verdict = Ended(TrialOutcome.ERROR, f"{where}: {exc}")
        except Exception as exc:  # a bug of ours: the trial says where, the run goes on
            verdict = Ended(TrialOutcome.ERROR, f"{where}: {type(exc).__name__}: {exc}")
        finally:
            if watching is not None:
                self.watched = time.monotonic() - watching
            if runner is not None:
                runner.stop()
            self._revert()
        if verdict is None:
            return None
        return self.record(started, verdict, time.monotonic() - clock)

    # -- the phases -------------------------------------------------------------------------

    def prepare(self) -> None:
        """A healthy lab of the scenario's subject and size: the one there is, healed, or a
        fresh one when it cannot heal, is of another kind, or a root script will run."""
        lab, scenario = self.lab, self.scenario
        subject = plugins.load_subject(scenario.subject)
        nodes = scenario.size(subject)
        if lab.dir.exists() and not scenario.needs_fresh_lab:
            try:
                same = lab.state.subject == subject.name and len(lab.state.nodes) == nodes
                if same and lab.running():
                    lab.heal(self.progress)
                    return
            except OperatorError as exc:
                self.progress(f"{lab.dir.name} did not heal ({exc}); resetting it")
        lab.down(self.progress)
        lab.wipe()
        lab.up(subject, nodes, None, self.settings.lab_user, self.progress)

    def baseline(self, runner: Runner) -> None:
        """Wait for a few clean monitor cycles in a row with no ticket of the trial live."""
        monitor, deadline, clean = runner.monitor, time.monotonic() + BASELINE_TIMEOUT, 0
        seen_last = None
        while clean < BASELINE_CYCLES:
            if time.monotonic() > deadline:
                problem = "; ".join(v.message for v in monitor.seen) or monitor.last_error
                raise Ended(TrialOutcome.ERROR, "the lab was not healthy before the fault "
                              f"({problem or 'tickets were live'})")  # fmt: skip
            self._wait()
            if monitor.last is seen_last:
                continue
            seen_last = monitor.last
            healthy = not monitor.seen and monitor.last_error is None
            clean = clean + 1 if healthy and not self.store.live(scope=self.scope) else 0

    def inject(self) -> list[tuple[float, Injection]]:
        """Inject each fault; returns the timed ones with the moment each is due to revert."""
        scenario, lab = self.scenario, self.lab
        self.targets = self._aliases()
        timed = []
        for step in scenario.faults:
            target = self.targets.get(step.target or "", step.target)
            injection = chaos.inject(lab, step.fault, target, step.fault_params())
            if self.injected_at is None:
                self.injected_at = datetime.fromisoformat(injection.injected_at)
                self.injected_mono = time.monotonic()
            if step.duration:
                timed.append((time.monotonic() + step.duration, injection))
            self.progress(f"{scenario.name}: {step.fault} on {injection.target}")
        if self.injected_at is None:  # a no-op scenario: its watch starts now
            self.injected_at, self.injected_mono = utcnow(), time.monotonic()
        return timed

    def _aliases(self) -> dict[str, str]:
        """The node each alias the scenario uses names in this trial."""
        used = {step.target for step in self.scenario.faults if step.target in ALIASES}
        if not used:
            return {}
        leader = self.lab.leader()
        if leader is None:
            raise OperatorError("the cluster has no leader to resolve leader/follower against")
        followers = [n.name for n in self.lab.cluster.nodes if n.name != leader]
        named = {"leader": leader, "follower": random.choice(followers)}
        return {alias: node for alias, node in named.items() if alias in used}

    def incident(self, runner: Runner, timed: list[tuple[float, Injection]]) -> None:
        """From the fault to the verified resolution of every ticket of the trial."""
        scenario = self.scenario
        assert self.injected_mono is not None
        start, expected = self.injected_mono, set(scenario.expect.tickets)
        while True:
            self._wait()
            now = time.monotonic()
            for due, injection in [t for t in timed if t[0] <= now]:
                timed.remove((due, injection))
                self._timed_revert(injection)
            tickets = self.store.tickets(scope=self.scope)
            if scenario.noop:
                if tickets:
                    raise Ended(TrialOutcome.FAILED, f"a no-op scenario opened {_keys(tickets)}")
                if now - start >= scenario.expect.within:
                    return
                continue
            self.judge(tickets)  # a regression decides the trial at once
            opened = [t.opened_at for t in tickets if t.invariant in expected]
            if self.detected_at is None and opened:
                self.detected_at = min(opened)
            if self.detected_at is None and now - start > scenario.expect.within:
                seen = f" (it opened {_keys(tickets)})" if tickets else ""
                raise Ended(TrialOutcome.NOT_DETECTED, f"no {' or '.join(sorted(expected))} "
                              f"ticket within {scenario.expect.within:g} s{seen}")  # fmt: skip
            self._sessions(tickets)
            resolved = [t.resolved_at for t in tickets if t.status == Status.RESOLVED]
            if self.detected_at and not timed and len(resolved) == len(tickets):
                self.mitigated_at = max(r for r in resolved if r is not None)
                return
            if now - start > scenario.time_limit:
                left = [t for t in tickets if t.status != Status.RESOLVED]
                still = f"{_keys(left) or 'no ticket'} still open after {scenario.time_limit:g} s"
                raise self._unconfirmed(still) or Ended(TrialOutcome.TIMEOUT, still)

    def _sessions(self, tickets: list[Ticket]) -> None:
        """End the trial on the first session that escalated or broke."""
        for ticket in tickets:
            for session in self.store.sessions(ticket.id):
                summary = (session.summary or "").strip().splitlines()
                said = f"session {session.id}: {summary[0][:200] if summary else session.outcome}"
                if session.outcome == Outcome.ESCALATED:
                    raise self._unconfirmed(said) or Ended(TrialOutcome.ESCALATED, said)
                if session.outcome == Outcome.FAILED:  # the model's API, the sandbox...
                    raise Ended(TrialOutcome.ERROR, f"the agent's session broke: {said}")

    def _unconfirmed(self, then: str) -> Ended | None:
        """An agent that claimed a fix the monitor never confirmed failed, whatever ended
        its session after (the time limit, its budget, giving up)."""
        claims = self.watch.unverified
        if not claims:
            return None
        times = "once" if claims == 1 else f"{claims} times"
        return Ended(TrialOutcome.FAILED, f"the agent said it had fixed it ({times}); the "
                     f"monitor never confirmed it ({then})")  # fmt: skip

    def settle(self, runner: Runner) -> None:
        """Every invariant holds, no ticket opens, and the load's errors stay in bound."""
        window = self.scenario.success.settle
        before = len(self.store.tickets(scope=self.scope))
        ops, errors = self.watch.ops_errors
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            self._wait()
            tickets = self.store.tickets(scope=self.scope)
            self.judge(tickets)
            if len(tickets) > before or any(t.status != Status.RESOLVED for t in tickets):
                live = [t for t in tickets if t.status != Status.RESOLVED]
                raise Ended(TrialOutcome.FAILED, f"{_keys(live)} opened again in the "
                              f"{window:g} s settle window")  # fmt: skip
        monitor = runner.monitor
        if monitor.seen or monitor.last_error:
            problem = "; ".join(v.message for v in monitor.seen) or monitor.last_error
            raise Ended(TrialOutcome.FAILED, f"at the end of the settle window: {problem}")
        ops_after, errors_after = self.watch.ops_errors
        done = ops_after - ops
        if done > 0:
            self.error_rate = (errors_after - errors) / done
            if self.error_rate > self.scenario.success.max_error_rate:
                raise Ended(TrialOutcome.FAILED, f"the load's error rate was "
                              f"{self.error_rate:.1%} in the settle window (bound "
                              f"{self.scenario.success.max_error_rate:.1%})")  # fmt: skip

    def judge(self, tickets: list[Ticket]) -> None:
        """Fail on a regression: a ticket that broke after the agent's first command and
        was not live before it."""
        since, before = self.watch.first_command, self.watch.live_before
        if since is None:
            return
        broke = sorted({
            t.key for t in tickets if t.key not in before
            for e in self.store.events(t.id) if e.kind in BREACHES and e.at >= since
        })  # fmt: skip
        if broke:
            raise Ended(TrialOutcome.FAILED, "regression: " + ", ".join(
                f"{key} broke after the agent's first command" for key in broke
            ))  # fmt: skip

    def _success_note(self) -> str:
        if self.scenario.noop:
            return f"no ticket in {self.scenario.expect.within:g} s (a true negative)"
        return "every ticket resolved and verified; the settle window held"

    def _wait(self) -> None:
        if self.stop.wait(POLL):
            raise Interrupted

    # -- what the runner reports ------------------------------------------------------------

    def _event(self, event: Event) -> None:
        watch = self.watch
        with watch.lock:
            if event.kind == "command" and watch.first_command is None:
                seen = self.runner.monitor.seen if self.runner else []
                live = self.store.live(scope=self.scope)
                watch.live_before = {t.key for t in live} | {v.key for v in seen}
                watch.first_command = event.at
            elif event.kind == "unverified":
                watch.unverified += 1

    def _load(self, stats: dict[str, Any]) -> None:
        self.watch.ops_errors = (int(stats.get("ops", 0)), int(stats.get("errors", 0)))

    # -- reverting --------------------------------------------------------------------------

    def _timed_revert(self, injection: Injection) -> None:
        chaos.revert(self.lab, injection.id)
        self.progress(f"{self.scenario.name}: {injection.fault} on {injection.target} reverted")

    def _revert(self) -> None:
        """Undo what the trial injected; what cannot be undone waits for the next prepare,
        which resets the lab."""
        try:
            for injection in Injections(self.lab.path).active():
                chaos.revert(self.lab, injection.id)
        except OperatorError as exc:
            self.progress(f"{self.lab.dir.name}: {exc}; the next trial resets the lab")

    # -- the record -------------------------------------------------------------------------

    def record(self, started: datetime, verdict: Ended, seconds: float) -> EvalTrial:
        tickets = sorted(self.store.tickets(scope=self.scope), key=lambda t: t.id)
        sessions = [s for t in tickets for s in self.store.sessions(t.id)]
        commands = [
            e.content
            for s in sessions
            for e in self.store.audit_entries(s.id)
            if e.kind == AuditKind.TOOL_CALL
        ]
        since = self.injected_at
        ttd = (self.detected_at - since).total_seconds() if since and self.detected_at else None
        success = verdict.outcome == TrialOutcome.SUCCESS
        ttm = None
        if since and self.mitigated_at and success and not self.scenario.noop:
            ttm = (self.mitigated_at - since).total_seconds()
        return self.store.add_eval_trial(
            run_id=self.run.id,
            scenario=self.scenario.name,
            scenario_sha256=self.scenario.sha256,
            attempt=self.attempt,
            lab=self.lab.dir.name,
            targets=self.targets,
            outcome=verdict.outcome,
            why=verdict.why,
            started_at=started,
            injected_at=since,
            ended_at=utcnow(),
            ttd_seconds=ttd,
            ttm_seconds=ttm,
            overhead_seconds=round(seconds - self.watched, 3),
            steps=sum(s.steps for s in sessions),
            commands=len(commands),
            state_changing=sum(1 for c in commands if not classify(c).read_only),
            tokens_in=sum(s.tokens_in for s in sessions),
            tokens_out=sum(s.tokens_out for s in sessions),
            cost_usd=sum(s.cost_usd for s in sessions),
            error_rate=self.error_rate,
            false_positives=len(tickets) if self.scenario.noop else 0,
            tickets=[t.id for t in tickets],
            sessions=[s.id for s in sessions],
        )


def _keys(tickets: list[Ticket]) -> str:
    return ", ".join(sorted({f"{t.invariant} on {t.target}" for t in tickets}))
