"""Runs the whole loop for one lab (`operator run`, the demo): the load, the monitor and the
agent workers, each on its own thread and restarted if it dies, with every transition and
agent step kept as an event for whoever shows them."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operator_ai.agent import SETTLE_SECONDS, run_workers, work
from operator_ai.agent.worker import AgentOptions, agent_factory
from operator_ai.config import Settings
from operator_ai.core import Report
from operator_ai.lab import Lab
from operator_ai.lab.load import DEFAULT_RATE
from operator_ai.monitor import Monitor, Transition
from operator_ai.store import Approval, ApprovalStatus, Store


@dataclass(frozen=True)
class Event:
    """A monitor transition (opened, cleared...), an agent event (command...) or an error."""

    at: datetime
    kind: str
    data: dict[str, Any]


AGENT_EVENTS = (
    "claimed", "snapshot", "reasoning", "approval", "decided", "command", "result", "news",
    "unverified", "ended", "warning",
)  # fmt: skip


class Runner:
    """Start with ``start()``, stop with ``stop()``; read ``events`` and ``monitor``."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        lab: Lab,
        *,
        model: str | None,
        workers: int = 1,
        rate: float = DEFAULT_RATE,
        interval: float = 1.0,
        settle: float = SETTLE_SECONDS,
        approval: str | None = None,
        on_event: Callable[[Event], None] = lambda e: None,
        scope: str | None = None,
        on_load: Report = lambda stats: None,
        hide: tuple[Path, ...] = (),
    ) -> None:
        """``scope`` keeps this run's tickets apart (default: the lab's name); ``on_load``
        gets the load's stats once a second; ``hide`` is kept out of the agent's sight."""
        self.settings, self.store, self.lab = settings, store, lab
        self.model, self.workers, self.rate, self.settle = model, workers, rate, settle
        self.approval = approval or settings.approval
        self.monitor = Monitor(store, lab.subject, lab.cluster, interval=interval, scope=scope)
        self.on_load, self.hide = on_load, hide
        self.events: deque[Event] = deque(maxlen=500)
        self.on_event = on_event
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        event = Event(datetime.now(UTC), kind, data)
        self.events.append(event)
        self.on_event(event)

    def start(self, workers: bool = True) -> None:
        """Start the monitor and the load, and the workers unless told to wait."""
        self._thread(self._keep_monitoring)
        self._thread(self._keep_loading)
        if workers:
            self.start_workers()

    def start_workers(self) -> None:
        if self.model:
            self._thread(run_workers, self.workers, self._worker)

    def _keep_monitoring(self) -> None:
        """The monitor, restarted a second after anything breaks it (a store outage, say);
        the screen shows what broke, so a stale dashboard never passes for a quiet one."""
        while not self.stopping.is_set():
            try:
                self.monitor.run(self._transition, self.stopping)
            except Exception as exc:
                self.emit("error", {"message": f"monitor stopped: {exc}; restarting in 1 s"})
                self.stopping.wait(1.0)

    def _keep_loading(self) -> None:
        """The subject's load generator, started again a second after it fails."""
        subject, cluster = self.lab.subject, self.lab.cluster
        while not self.stopping.is_set():
            try:
                subject.load(cluster, self.rate, None, self.on_load, self.stopping)
                problem = "the load ended"
            except Exception as exc:
                problem = f"the load stopped: {exc}"
            if not self.stopping.wait(1.0):
                self.emit("error", {"message": f"{problem}; restarting it"})

    def _thread(self, target: Callable[..., object], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _transition(self, t: Transition) -> None:
        self.emit(t.kind, {"ticket": t.ticket_id, "key": t.key, "message": t.message})

    def _worker(self, name: str) -> None:
        assert self.model is not None
        options = AgentOptions(
            model=self.model,
            settle_seconds=self.settle,
            lab=self.lab.dir.name,
            approval=self.approval,
            approval_timeout=self.settings.approval_timeout_seconds,
            hide=self.hide,
        )
        agent_for = agent_factory(self.settings, self.store, options, self.stopping, self.emit)

        def on_error(worker: str, exc: Exception) -> None:
            self.emit("error", {"message": str(exc)})

        work(self.store, name, agent_for, self.stopping, model=self.model,
             lease_seconds=self.settings.lease_seconds, on_error=on_error,
             scope=self.monitor.scope)  # fmt: skip

    def waiting(self) -> list[Approval]:
        """This run's commands that wait for a human, the oldest first."""
        return self.store.approvals(ApprovalStatus.PENDING, subject=self.lab.state.subject)[::-1]

    def stop(self) -> None:
        """Stop the load, the monitor and the workers (each finishes its current step)."""
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=150)


def victim(lab: Lab) -> str:
    """The node a demo or a key press kills: the last one that does not lead."""
    leader = lab.leader()
    return next(n.name for n in reversed(lab.state.nodes) if n.name != leader)
