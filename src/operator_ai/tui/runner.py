"""Runs the whole loop for one lab: load (a child process), the monitor and the agent
workers (threads), each restarted if it dies, with every transition and agent step kept as
an event for the screen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from operator_ai.agent import run_workers, work
from operator_ai.agent.worker import AgentOptions, agent_factory
from operator_ai.config import Settings
from operator_ai.lab import Lab
from operator_ai.monitor import Monitor, Transition
from operator_ai.store import Store
from operator_ai.tui.transcript import Event


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
        rate: float = 50.0,
        interval: float = 1.0,
        settle: float = 30.0,
        on_event: Callable[[Event], None] = lambda e: None,
    ) -> None:
        self.settings, self.store, self.lab = settings, store, lab
        self.model, self.workers, self.rate, self.settle = model, workers, rate, settle
        self.monitor = Monitor(store, lab, interval=interval)
        self.events: deque[Event] = deque(maxlen=500)
        self.on_event = on_event
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._load: subprocess.Popen[bytes] | None = None
        self._load_lock = threading.Lock()

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        event = Event(datetime.now(UTC), kind, data)
        self.events.append(event)
        self.on_event(event)

    def start(self) -> None:
        self._load = self._start_load()
        self._thread(self._keep_monitoring)
        self._thread(self._keep_loading)
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
        """The load generator, started again whenever it exits while the run goes on."""
        while not self.stopping.wait(1.0):
            problem = None
            with self._load_lock:  # stop() holds it while it ends the load
                assert self._load is not None
                code = self._load.poll()
                if code is not None and not self.stopping.is_set():
                    problem = f"the load exited ({code}); restarting it"
                    try:
                        self._load = self._start_load()
                    except OSError as exc:  # tried again a second later
                        problem = f"the load exited ({code}) and cannot start again: {exc}"
            if problem:
                self.emit("error", {"message": problem})

    def _start_load(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OPERATOR_HOME": str(self.settings.home)}
        argv = [sys.executable, "-m", "operator_ai", "lab", "load", self.lab.dir.name,
                "--rate", f"{self.rate:g}"]  # fmt: skip
        with open(self.lab.path / "logs" / "load.log", "ab") as log:
            return subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)

    def _thread(self, target: Callable[..., object], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _transition(self, t: Transition) -> None:
        self.emit(t.kind, {"ticket": t.ticket_id, "key": t.key, "message": t.message})

    def _worker(self, name: str) -> None:
        assert self.model is not None
        options = AgentOptions(model=self.model, settle_seconds=self.settle, lab=self.lab.dir.name)
        agent_for = agent_factory(self.settings, self.store, options, self.stopping, self.emit)

        def on_error(worker: str, exc: Exception) -> None:
            self.emit("error", {"message": str(exc)})

        work(self.store, name, agent_for, self.stopping, model=self.model,
             lease_seconds=self.settings.lease_seconds, on_error=on_error)  # fmt: skip

    def stop(self) -> None:
        """Stop the load, the monitor and the workers (each finishes its current step)."""
        self.stopping.set()
        with self._load_lock:
            if self._load is not None and self._load.poll() is None:
                self._load.send_signal(signal.SIGINT)
                try:
                    self._load.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._load.kill()  # our child, not reaped yet: its PID is still its own
                    self._load.wait()
        for thread in self._threads:
            thread.join(timeout=150)


def victim(lab: Lab) -> str:
    """The node a demo or a key press kills: the last one that does not lead."""
    leader = lab.leader()
    return next(n.name for n in reversed(lab.state.nodes) if n.name != leader)
