"""Helpers for tests that run a real lab: bring one up, drive the monitor, wait for tickets."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from operator_ai.lab import Lab, LabDir
from operator_ai.lab.load import read_workload
from operator_ai.monitor import Monitor
from operator_ai.plugins import load_subject
from operator_ai.store import Store
from operator_ai.store.records import Ticket

ROOT = os.geteuid() == 0
MODE = "netns" if ROOT else "loopback"


@contextmanager
def lab_home() -> Iterator[Path]:
    """A home the lab user can traverse (pytest's own temp dirs are private to root)."""
    home = Path(tempfile.mkdtemp(prefix="operator-test-"))
    home.chmod(0o755)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def running_lab(
    home: Path, subject: str = "etcd", mode: str = MODE, name: str | None = None, nodes: int = 3
) -> Iterator[Lab]:
    lab = Lab(LabDir(home, name or subject))
    try:
        lab.up(load_subject(subject), nodes, mode, "operator-lab")
        yield lab
    finally:
        lab.down()


def live(store: Store, key: str) -> Ticket | None:
    return next((t for t in store.live() if t.key == key), None)


def cycle_until(
    monitor: Monitor, predicate: Callable[[], object], timeout: float = 30.0, what: str = ""
) -> None:
    """Run monitor cycles, about twice a second, until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        monitor.cycle()
        if predicate():
            return
        time.sleep(0.5)
    tickets = [(t.key, t.status) for t in monitor.store.tickets()]
    raise AssertionError(f"timed out waiting for {what or predicate}; tickets: {tickets}")


def cycle_for(monitor: Monitor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        monitor.cycle()
        time.sleep(0.5)


@contextmanager
def running_monitor(store: Store, lab: Lab, interval: float = 0.5) -> Iterator[Monitor]:
    """The real monitor, cycling on a thread for as long as the block runs."""
    monitor = Monitor(store, lab.subject, lab.cluster, interval=interval)
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(lambda t: None, stop), daemon=True)
    thread.start()
    try:
        yield monitor
    finally:
        stop.set()
        thread.join(timeout=30)


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(0.2)


@contextmanager
def lab_load(lab: Lab, rate: int) -> Iterator[subprocess.Popen[str]]:
    """`operator lab load` on ``lab`` at ``rate`` ops/s, as a user would run it; Ctrl-C at
    the end, and its stats removed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
    env["OPERATOR_HOME"] = str(lab.path.parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-m", "operator_ai", "lab", "load", "--lab", lab.path.name,
         "--rate", str(rate)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: read_workload(lab.path) is not None, what="the load to start")
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        (lab.path / "load.json").unlink(missing_ok=True)
