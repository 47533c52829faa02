"""The monitor: observe a subject, check its invariants, and reconcile tickets.

Each cycle follows the ticket rules of DESIGN.md:

- a violation opens (or updates) its ticket only once it has lasted its grace period;
- a ticket clears only after ``clear_after`` successive *successful* observations without
  its violation (hysteresis);
- a failed observation is itself a violation, ``subject_unobservable``, and clears nothing;
  nor does a look that could not evaluate an invariant (``Observation.unobserved``);
- a violation that returns soon after clearing re-opens the same ticket (the store decides).

What the monitor remembers between cycles (first sightings, clean streaks, recent
observations) lives in memory; the tickets live in the store, so a restarted monitor finds
its open tickets again and never duplicates them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from operator_ai.clock import utcnow
from operator_ai.core import Cluster, Invariant, Observation, Subject, Violation
from operator_ai.errors import SubjectUnreachable
from operator_ai.store import Store
from operator_ai.store.records import Ticket

UNOBSERVABLE = Invariant(
    "subject_unobservable", "the monitor can observe the system", "critical", 2.0
)
HISTORY = 300


@dataclass(frozen=True)
class Transition:
    at: datetime
    kind: str
    """opened, reopened, returned, cleared (the agent's to confirm) or resolved."""
    ticket_id: int
    key: str
    message: str


class Monitor:
    """Watches one cluster of ``subject``, a lab's or any other."""

    def __init__(
        self,
        store: Store,
        subject: Subject,
        cluster: Cluster,
        interval: float = 1.0,
        timeout: float | None = None,
        clear_after: int = 2,
        scope: str | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.scope = scope or cluster.name
        """Which tickets are this monitor's: the cluster's name, or an eval trial's."""
        self.subject = subject
        self.interval = interval
        self.timeout = timeout or max(0.5, 0.8 * interval)
        self.clear_after = clear_after
        self.grace = {i.name: i.grace_seconds for i in [*self.subject.invariants, UNOBSERVABLE]}
        self.history: deque[Observation] = deque(maxlen=HISTORY)
        self.last: Observation | None = None
        self.last_error: str | None = None
        self._first_seen: dict[str, datetime] = {}
        self.seen: list[Violation] = []
        """The violations of the last cycle, tickets or not (a grace period may be running)."""
        self._clean: dict[str, int] = {}
        self._cycling = threading.Lock()

    def rescope(self, scope: str) -> None:
        """From the next cycle on, keep tickets in ``scope`` (an eval trial moves from its
        baseline's scope to its own when it injects)."""
        with self._cycling:
            self.scope = scope

    def cycle(self) -> list[Transition]:
        """Observe once, then open, update and clear tickets accordingly."""
        with self._cycling:
            return self._cycle()

    def _cycle(self) -> list[Transition]:
        try:
            observation = self.subject.observe(self.cluster, self.timeout)
        except SubjectUnreachable as exc:
            self.last_error = str(exc)
            violations = [
                Violation(self.subject.name, UNOBSERVABLE.name, "cluster", str(exc),
                          UNOBSERVABLE.severity)
            ]  # fmt: skip
            observed = False
        else:
            self.last_error = None
            violations = self.subject.check(observation, self.history)
            self.history.append(observation)
            self.seen = violations  # before ``last``: a reader of both never pairs them wrong
            self.last = observation
            observed = True
        self.seen = violations
        now = utcnow()
        live = {t.key: t for t in self.store.live(scope=self.scope)}
        transitions = self._report(violations, live, now)
        if observed:
            # What this look could not evaluate keeps its tickets, as if it had been seen.
            blind = {k for k, t in live.items() if not observation.saw(t.invariant, t.target)}
            transitions += self._clear({v.key for v in violations} | blind, live, now)
        else:
            self._clean.clear()
        self.store.release_expired(now)
        return transitions

    def _report(
        self, violations: list[Violation], live: dict[str, Ticket], now: datetime
    ) -> list[Transition]:
        current = {v.key for v in violations}
        for key in set(self._first_seen) - current:
            del self._first_seen[key]
        transitions = []
        for v in violations:
            first = self._first_seen.setdefault(v.key, now)
            # Sightings come once per interval: a breach seen across the grace period, to
            # within half a cycle of jitter, has lasted it.
            lasted = (now - first).total_seconds() + self.interval / 2
            if v.key not in live and lasted < self.grace.get(v.invariant, 0):
                continue
            returning = v.key in live and live[v.key].cleared_at is not None
            seen = replace(v, first_seen_at=first)
            ticket, what = self.store.report_violation(seen, now, self.scope)
            if what != "updated" or returning:
                kind = "returned" if what == "updated" else what
                transitions.append(Transition(now, kind, ticket.id, v.key, v.message))
        return transitions

    def _clear(self, current: set[str], live: dict[str, Ticket], now: datetime) -> list[Transition]:
        transitions = []
        for key in set(self._clean) - set(live):
            del self._clean[key]
        for key in live:
            if key in current:
                self._clean[key] = 0
                continue
            self._clean[key] = self._clean.get(key, 0) + 1
            if self._clean[key] < self.clear_after:
                continue
            before = live[key]
            ticket = self.store.clear(key, now, self.scope)
            if ticket is None or before.cleared_at is not None:
                continue
            kind = "resolved" if ticket.status == "resolved" else "cleared"
            transitions.append(Transition(now, kind, ticket.id, key, "violation no longer seen"))
        return transitions

    def run(
        self,
        on_transition: Callable[[Transition], None],
        stop: threading.Event,
        once: bool = False,
    ) -> None:
        """Cycle every ``interval`` seconds on a fixed cadence until ``stop`` is set."""
        tick = time.monotonic()
        while not stop.is_set():
            for transition in self.cycle():
                on_transition(transition)
            if once:
                return
            tick += self.interval
            stop.wait(max(0.0, tick - time.monotonic()))
            if time.monotonic() - tick > self.interval:
                tick = time.monotonic()  # fell behind (a slow cycle); do not burst to catch up
