"""One trial: a scenario's incident in a healthy lab, worked by the model under test (or by
nobody), judged by the monitor, and measured from the fault.

    prepare    heal the lab (revert faults, start nodes), or reset it when that fails
    baseline   start the load and the monitor; wait for clean monitor cycles in a row
    inject     resolve the scenario's aliases to nodes, inject each fault in order, then
               start the agent's workers
    incident   wait for the expected ticket (TTD), then for every ticket's verified
               resolution with nothing else in violation (TTM), an escalation, a broken
               session, or the time limit
    settle     no ticket opens, the last look sees every invariant hold, the load's errors
               stay in bound

All along, a regression fails the trial: a ticket that breaks after the agent's first
state-changing command, that was neither live nor seen by the monitor before it, and that
the fault does not explain: it is on a node no fault struck, or, for a ticket about the
whole cluster, of an invariant the scenario does not expect.

The baseline's tickets (a blip of a loaded machine) stay in the scope
`eval/RUN/SCENARIO/ATTEMPT/baseline`; at the injection the monitor moves to the trial's own,
`eval/RUN/SCENARIO/ATTEMPT`, which only its workers claim from: trials in parallel labs
never share a ticket, and a baseline blip is never taken for the incident.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from operator_ai import plugins
from operator_ai.approval.classify import classify
from operator_ai.approval.gate import NEVER
from operator_ai.clock import utcnow
from operator_ai.config import Settings
from operator_ai.core import Injection
from operator_ai.errors import OperatorError
from operator_ai.eval.scenario import ALIASES, Scenario
from operator_ai.lab import Lab
from operator_ai.lab import injections as chaos
from operator_ai.lab.injections import Injections, followers
from operator_ai.lab.state import Progress
from operator_ai.models import SHELL
from operator_ai.monitor import Monitor
from operator_ai.run import Event, Runner
from operator_ai.store import AuditKind, EvalRun, EvalTrial, Outcome, Status, Store, Ticket
from operator_ai.store.records import TrialOutcome

POLL = 0.25
BASELINE_CYCLES = 3
"""Clean monitor cycles in a row before a fault: every invariant holds, no grace running."""
BASELINE_TIMEOUT = 60.0
BREACHES = ("opened", "reopened", "violation_returned")
"""The ticket events that mean an invariant broke (again)."""
ACTOR = "eval"


class Interrupted(Exception):
    """The run was asked to stop: the trial is cleaned up and not recorded."""


class Ended(Exception):
    """How a trial ended, raised from wherever it became known."""

    def __init__(self, outcome: TrialOutcome, why: str) -> None:
        super().__init__(why)
        self.outcome, self.why = outcome, why


@dataclass
class Watch:
    """What the trial learns from its runner, on the runner's threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    first_write: datetime | None = None
    """When the agent ran its first command that the classifier cannot prove read-only."""
    broken_before: set[str] = field(default_factory=set)
    """What was broken before that: the trial's tickets, and the violations the monitor saw
    that a grace period had not made tickets yet."""
    unverified: set[int] = field(default_factory=set)
    """Tickets the agent said it had fixed and the monitor did not confirm."""
    ops: int = 0
    errors: int = 0
    """The load's requests and errors over the trial, across restarts of the load."""
    _last: tuple[int, int] = (0, 0)

    def load(self, ops: int, errors: int) -> None:
        last_ops, last_errors = self._last
        restarted = ops < last_ops  # a restarted load counts from zero again
        self.ops += ops if restarted else ops - last_ops
        self.errors += errors if restarted else errors - last_errors
        self._last = (ops, errors)


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
        hide: tuple[Path, ...] = (),
    ) -> None:
        self.settings, self.store, self.lab = settings, store, lab
        self.scenario, self.run, self.attempt, self.model = scenario, run, attempt, model
        self.progress, self.stop, self.hide = progress, stop, hide
        self.scope = f"eval/{run.id}/{scenario.name}/{attempt}"
        self.watch = Watch()
        self.targets: dict[str, str] = {}
        self.struck: set[str] = set()
        """The nodes the faults struck (all of them, for a fault on the whole cluster)."""
        self.monitor: Monitor | None = None
        self.injected_at: datetime | None = None
        self.injected_mono: float | None = None
        self.detected_at: datetime | None = None
        self.mitigated_at: datetime | None = None
        self.error_rate: float | None = None
        self.watched = 0.0
        """Seconds from the last fault injected to the verdict and the workers' stop: the
        incident, worked or not, and the settle window. The rest is the harness's overhead."""

    def run_trial(self) -> EvalTrial | None:
        """The trial, recorded; None when the run was stopped before it ended."""
        started, clock = utcnow(), time.monotonic()
        runner: Runner | None = None
        watching: float | None = None
        verdict: Ended | None = None
        where = "preparing the lab"
        try:
            self.prepare()
            where = "starting the load and the monitor"
            runner = Runner(
                self.settings, self.store, self.lab, model=self.model, approval=NEVER,
                rate=self.scenario.load.rate, scope=f"{self.scope}/baseline",
                on_event=self._event, on_load=self._load, hide=self.hide,
            )  # fmt: skip
            self.monitor = runner.monitor
            runner.start(workers=False)
            where = "waiting for a healthy baseline"
            self.baseline(runner.monitor)
            where = "injecting the faults"
            runner.monitor.rescope(self.scope)
            timed = self.inject()
            watching = time.monotonic()
            runner.start_workers()
            where = "watching the incident"
            self.incident(runner.monitor, timed)
            where = "the settle window"
            self.settle(runner.monitor)
            verdict = Ended(TrialOutcome.SUCCESS, self._success_note())
        except Ended as ended:
            verdict = ended
        except Interrupted:
            pass
        except OperatorError as exc:
            verdict = Ended(TrialOutcome.ERROR, f"{where}: {exc}")
        except Exception as exc:  # a bug of ours: the trial says where, the run goes on
            verdict = Ended(TrialOutcome.ERROR, f"{where}: {type(exc).__name__}: {exc}")
        finally:
            if runner is not None:
                runner.stop()  # the agent's last step ends here: its time, not the harness's
            if watching is not None:
                self.watched = time.monotonic() - watching
            self._close_tickets(verdict)
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

    def baseline(self, monitor: Monitor) -> None:
        """Wait for clean monitor cycles in a row: every invariant seen, and holding."""
        deadline, clean, last = time.monotonic() + BASELINE_TIMEOUT, 0, monitor.last
        while clean < BASELINE_CYCLES:
            if time.monotonic() > deadline:
                raise Ended(TrialOutcome.ERROR, f"the lab was not healthy before the fault: "
                            f"{_problem(monitor) or 'tickets stayed live'}")  # fmt: skip
            self._wait()
            if monitor.last is last:
                continue
            last = monitor.last
            healthy = not _problem(monitor) and not self.store.live(scope=monitor.scope)
            clean = clean + 1 if healthy else 0

    def inject(self) -> list[tuple[float, Injection]]:
        """Inject each fault; returns the timed ones with the moment each is due to revert."""
        scenario, lab = self.scenario, self.lab
        self.targets = self._aliases()
        timed = []
        for step in scenario.faults:
            target = self.targets.get(step.target or "", step.target)
            injection = chaos.inject(lab, step.fault, target, step.fault_params())
            nodes = [n.name for n in lab.cluster.nodes]
            self.struck |= {injection.target} if injection.target in nodes else set(nodes)
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
            raise OperatorError(f"{self.scenario.subject} has no leader now, so leader and "
                                "follower name no node; name the node instead")  # fmt: skip
        named = {"leader": leader, "follower": random.choice(followers(self.lab.cluster, leader))}
        return {alias: node for alias, node in named.items() if alias in used}

    def incident(self, monitor: Monitor, timed: list[tuple[float, Injection]]) -> None:
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
            self._note_broken(monitor, tickets)
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
            resolved = [t.resolved_at for t in tickets if t.resolved_at is not None]
            done = self.detected_at is not None and not timed and len(resolved) == len(tickets)
            if done and not monitor.seen:
                self.mitigated_at = max(resolved)
                return
            if now - start > scenario.time_limit:
                left = [t for t in tickets if t.status != Status.RESOLVED]
                what = _keys(left) or _problem(monitor) or "nothing"
                still = f"{what} still broken after {scenario.time_limit:g} s"
                raise self._unconfirmed(tickets, still) or Ended(TrialOutcome.TIMEOUT, still)

    def _sessions(self, tickets: list[Ticket]) -> None:
        """End the trial on the first session that escalated or broke."""
        for ticket in tickets:
            for session in self.store.sessions(ticket.id):
                summary = (session.summary or "").strip().splitlines()
                said = f"session {session.id}: {summary[0][:200] if summary else session.outcome}"
                if session.outcome == Outcome.ESCALATED:
                    raise self._unconfirmed(tickets, said) or self._escalated(said)
                if session.outcome == Outcome.FAILED:  # the model's API, the sandbox...
                    raise Ended(TrialOutcome.ERROR, f"the agent's session broke: {said}")

    def _escalated(self, said: str) -> Ended:
        if self.scenario.expect.escalation:
            return Ended(TrialOutcome.SUCCESS, f"escalated, as this incident needs: {said}")
        return Ended(TrialOutcome.ESCALATED, said)

    def _unconfirmed(self, tickets: list[Ticket], then: str) -> Ended | None:
        """An agent that claimed a fix the monitor never confirmed failed, whatever ended
        its session after (the time limit, its budget, giving up)."""
        still = {t.id for t in tickets if t.status != Status.RESOLVED}
        claimed = sorted(self.watch.unverified & still)
        if not claimed:
            return None
        which = ", ".join(f"#{t}" for t in claimed)
        return Ended(TrialOutcome.FAILED, f"the agent said it had fixed {which}; the monitor "
                     f"never confirmed it ({then})")  # fmt: skip

    def settle(self, monitor: Monitor) -> None:
        """No ticket opens, the last look sees every invariant hold, and the load's errors
        stay in bound. A violation shorter than its grace period is what the monitor calls a
        blip (an election, the tail of the load's 10 s error window after a fault ends): it
        opens no ticket here either."""
        window, bound = self.scenario.success.settle, self.scenario.success.max_error_rate
        before = len(self.store.tickets(scope=self.scope))
        ops, errors = self.watch.ops, self.watch.errors
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            self._wait()
            tickets = self.store.tickets(scope=self.scope)
            self.judge(tickets)
            if len(tickets) > before or any(t.status != Status.RESOLVED for t in tickets):
                live = [t for t in tickets if t.status != Status.RESOLVED]
                raise Ended(TrialOutcome.FAILED, f"{_keys(live)} broke again in the "
                            f"{window:g} s settle window")  # fmt: skip
        if problem := _problem(monitor):
            raise Ended(TrialOutcome.FAILED, f"at the end of the settle window: {problem}")
        done = self.watch.ops - ops
        if window and done <= 0:
            raise Ended(TrialOutcome.FAILED, "the load made no request in the settle window")
        if done > 0:
            self.error_rate = (self.watch.errors - errors) / done
            if self.error_rate > bound:
                rate = f"{self.error_rate:.1%} (bound {bound:.1%})"
                raise Ended(TrialOutcome.FAILED, f"the load's error rate was {rate} in the settle "
                            "window")  # fmt: skip

    def judge(self, tickets: list[Ticket]) -> None:
        """Fail on a regression: a ticket that broke after the agent's first state-changing
        command, and that was not broken before it."""
        since, before = self.watch.first_write, self.watch.broken_before
        if since is None:
            return
        broke = sorted({
            t.key for t in tickets if t.key not in before and not self._explained(t)
            for e in self.store.events(t.id) if e.kind in BREACHES and e.at >= since
        })  # fmt: skip
        if broke:
            raise Ended(TrialOutcome.FAILED, "regression: " + ", ".join(
                f"{key} broke after the agent's first state-changing command" for key in broke
            ))  # fmt: skip

    def _explained(self, ticket: Ticket) -> bool:
        """Whether the fault may have caused ``ticket``, however late it opened."""
        if ticket.target in {n.name for n in self.lab.cluster.nodes}:
            return ticket.target in self.struck
        return ticket.invariant in self.scenario.expect.tickets

    def _note_broken(self, monitor: Monitor, tickets: list[Ticket]) -> None:
        """Until the agent changes anything, what breaks is the fault's doing."""
        with self.watch.lock:
            if self.watch.first_write is None:
                self.watch.broken_before |= {t.key for t in tickets if t.status != Status.RESOLVED}
                self.watch.broken_before |= {v.key for v in monitor.seen}

    def _success_note(self) -> str:
        if self.scenario.noop:
            seconds = self.scenario.expect.within + self.scenario.success.settle
            return f"no ticket and no violation in {seconds:g} s (a true negative)"
        return "every ticket resolved and verified; the settle window held"

    def _wait(self) -> None:
        if self.stop.wait(POLL):
            raise Interrupted

    # -- what the runner reports ------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if event.kind == "command" and not classify(str(event.data.get("command"))).read_only:
            if self.watch.first_write is None and self.monitor is not None:
                self._note_broken(self.monitor, self.store.live(scope=self.scope))
                with self.watch.lock:
                    self.watch.first_write = self.watch.first_write or event.at
        elif event.kind == "unverified":
            with self.watch.lock:
                self.watch.unverified.update(int(t) for t in event.data["failing"])

    def _load(self, stats: dict[str, Any]) -> None:
        self.watch.load(int(stats.get("ops", 0)), int(stats.get("errors", 0)))

    # -- after the trial --------------------------------------------------------------------

    def _timed_revert(self, injection: Injection) -> None:
        chaos.revert(self.lab, injection.id)
        self.progress(f"{self.scenario.name}: {injection.fault} on {injection.target} reverted")

    def _revert(self) -> None:
        """Undo what the trial injected; what cannot be undone (a root script, say) waits
        for the next trial, which resets the lab."""
        for injection in Injections(self.lab.path).active():
            try:
                chaos.revert(self.lab, injection.id)
            except OperatorError as exc:
                self.progress(f"{self.lab.dir.name}: {exc}; the next trial resets the lab")

    def _close_tickets(self, verdict: Ended | None) -> None:
        """Escalate what the trial leaves open, saying so: nobody works it any more."""
        how = f"ended {verdict.outcome}" if verdict else "was stopped"
        for ticket in self.store.live(scope=self.scope):
            if ticket.status != Status.ESCALATED:
                self.store.escalate(ticket.id, f"eval trial {self.scope} {how}", actor=ACTOR)

    def record(self, started: datetime, verdict: Ended, seconds: float) -> EvalTrial:
        tickets = sorted(self.store.tickets(scope=self.scope), key=lambda t: t.id)
        sessions = list({s.id: s for t in tickets for s in self.store.sessions(t.id)}.values())
        commands = [  # the model's: the platform's snapshot is not the agent's doing
            e.content
            for s in sessions
            for e in self.store.audit_entries(s.id)
            if e.kind == AuditKind.TOOL_CALL and e.tool == SHELL.name
        ]
        since = self.injected_at
        ttd = (self.detected_at - since).total_seconds() if since and self.detected_at else None
        ttm = None
        if since and self.mitigated_at and verdict.outcome == TrialOutcome.SUCCESS:
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


def _problem(monitor: Monitor) -> str:
    """What the monitor's last cycle saw wrong: violations, a failed look, or an invariant
    it could not evaluate; empty when all held."""
    if monitor.last_error:
        return monitor.last_error
    if monitor.seen:
        return "; ".join(v.message for v in monitor.seen)
    if monitor.last is not None and monitor.last.unobserved:
        return f"could not evaluate {', '.join(monitor.last.unobserved)}"
    return ""


def _keys(tickets: list[Ticket]) -> str:
    return ", ".join(sorted({f"{t.invariant} on {t.target}" for t in tickets}))
