"""The one-command run and the demo, driven as a user would: the demo in a real terminal
(tmux), `operator run` headless, each against its own real etcd lab."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from lab_helpers import lab_home

pytestmark = [
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

RESTART = Path(__file__).resolve().parents[1] / "examples" / "restart-stopped.yaml"


@pytest.fixture
def home() -> Iterator[Path]:
    with lab_home() as home:
        try:
            yield home
        finally:
            run_cli("lab", "down", "--lab", "etcd", home=home)


def env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
    return clean | {"OPERATOR_HOME": str(home), "COLUMNS": "160"}


def tmux_until(tmux: list[str], shown: str, timeout: float = 120.0) -> str:
    """The pane's text, once ``shown`` is on it (or the timeout passed)."""
    screen = ""
    deadline = time.monotonic() + timeout
    while shown not in screen and time.monotonic() < deadline:
        time.sleep(1)
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-S", "-200"],
                                capture_output=True, text=True).stdout  # fmt: skip
    return screen


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@needs_tmux
def test_the_dashboard_kills_a_node_on_k_and_shows_the_repair(home: Path) -> None:
    tmux = ["tmux", "-L", f"operator-test-run-{os.getpid()}"]
    command = f"{sys.executable} -m operator_ai run etcd --model scripted:{RESTART}"
    shell = f"{command}; echo run-exited-$?; sleep 600"
    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "50", shell],
                   env=env(home), check=True)  # fmt: skip
    try:
        assert "k kill a node" in tmux_until(tmux, "k kill a node", 60)
        tmux_until(tmux, "healthy", 30)
        subprocess.run([*tmux, "send-keys", "k"], check=True)
        screen = tmux_until(tmux, "resolved: verified")
        panels = ("cluster: etcd", "workload", "ops/s", "tickets", "active faults")
        for shown in (*panels, "member_down", "kill on etcd", "$ supervisorctl",
                      "resolved: verified"):  # fmt: skip
            assert shown in screen, f"{shown!r} not on the screen:\n{screen}"
        subprocess.run([*tmux, "send-keys", "q"], check=True)
        assert "run-exited-0" in tmux_until(tmux, "run-exited-", 60)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


@needs_tmux
def test_the_dashboard_shows_a_waiting_command_and_approves_it_on_a(home: Path) -> None:
    tmux = ["tmux", "-L", f"operator-test-approve-{os.getpid()}"]
    command = (
        f"{sys.executable} -m operator_ai run etcd --approval writes --model scripted:{RESTART}"
    )
    subprocess.run([*tmux, "new-session", "-d", "-x", "180", "-y", "50", f"{command}; sleep 600"],
                   env=env(home), check=True)  # fmt: skip
    try:
        assert "a/d approve/deny" in tmux_until(tmux, "a/d approve/deny", 60)
        tmux_until(tmux, "healthy", 30)
        subprocess.run([*tmux, "send-keys", "k"], check=True)
        screen = tmux_until(tmux, "a/d decide #1 (writes)")
        assert "approvals (writes)" in screen and "waiting for approval #1" in screen, screen
        panel = screen[screen.index("a/d decide #1") :]
        assert "supervisorctl -c supervisord.conf start all" in panel  # shown whole
        assert "$ supervisorctl -c supervisord.conf status" in screen  # the read ran at once
        subprocess.run([*tmux, "send-keys", "a"], check=True)
        screen = tmux_until(tmux, "resolved: verified")
        assert "approval #1 approved" in screen and "none waiting" in screen, screen
        subprocess.run([*tmux, "send-keys", "q"], check=True)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


@needs_tmux
def test_the_demo_shows_fault_detection_repair_and_recovery_in_a_terminal(home: Path) -> None:
    socket = f"operator-test-{os.getpid()}"
    command = (f"{sys.executable} -m operator_ai demo etcd --auto "
               f"--model scripted:{RESTART}; sleep 600")  # fmt: skip
    tmux = ["tmux", "-L", socket]
    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "100", command],
                   env=env(home), check=True)  # fmt: skip
    try:
        screen = tmux_until(tmux, "agent session", 180)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    for shown in ("1. Health", "3. Fault", "fault: kill etcd", "detected in",
                  "$ supervisorctl -c supervisord.conf start all", "resolved: verified",
                  "recovered: ticket", "resolved by agent", "time to mitigate",
                  "7. Summary", "operator audit show"):  # fmt: skip
        assert shown in screen, f"{shown!r} not on the screen:\n{screen}"


def test_operator_run_headless_repairs_a_killed_member(home: Path) -> None:
    run = subprocess.Popen(
        [sys.executable, "-m", "operator_ai", "run", "etcd", "--no-ui",
         "--model", f"scripted:{RESTART}"],
        env=env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line)
            if line.startswith("run: etcd in lab etcd"):
                injected = run_cli("chaos", "inject", "kill", "-t", "etcd2", home=home)
                assert injected.returncode == 0, injected.stderr
            if any(f"{end}: " in line for end in ("resolved", "escalated", "failed")):
                break  # the session ended: the asserts below say whether it should have
        run.send_signal(signal.SIGINT)
        rest, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    output = "".join(lines) + rest
    assert run.returncode == 0, output
    assert "opened #1 etcd:member_down:etcd2" in output
    assert "$ supervisorctl -c supervisord.conf start all" in output
    assert "resolved: verified: the monitor saw etcd:member_down:etcd2 hold" in output
    assert "stopping the load, the monitor and the agent" in output


def test_the_runner_restarts_a_broken_monitor_and_a_dead_load(home: Path) -> None:
    from lab_helpers import running_lab, wait_for
    from operator_ai.config import Settings
    from operator_ai.lab.load import read_workload
    from operator_ai.run import Runner
    from operator_ai.store import Store

    class LoadThatDiesOnce:
        """The lab's subject, whose load generator crashes the first time it is started."""

        def __init__(self, subject: object) -> None:
            self.subject, self.started = subject, 0

        def __getattr__(self, name: str) -> object:
            return getattr(self.subject, name)

        def load(self, *args: object) -> None:
            self.started += 1
            if self.started == 1:
                raise RuntimeError("the load generator crashed")
            self.subject.load(*args)  # type: ignore[attr-defined]

    with running_lab(home) as lab, Store(f"sqlite:///{home / 'operator.db'}") as store:
        subject = LoadThatDiesOnce(lab.subject)
        lab._subject = subject  # type: ignore[assignment]
        runner = Runner(Settings(home=home, db=f"sqlite:///{home / 'operator.db'}"), store, lab,
                        model=None, rate=20)  # fmt: skip
        real_cycle, broken = runner.monitor.cycle, []

        def cycle_that_breaks_once() -> list[object]:
            if not broken:
                broken.append(True)
                raise RuntimeError("the store went away")
            return real_cycle()  # type: ignore[return-value]

        runner.monitor.cycle = cycle_that_breaks_once  # type: ignore[method-assign]
        runner.start()
        try:
            errors = lambda: [e.data["message"] for e in runner.events if e.kind == "error"]  # noqa: E731
            wait_for(lambda: any("monitor stopped: the store went away" in m for m in errors()))
            wait_for(lambda: runner.monitor.last is not None, what="the monitor to run again")

            wait_for(lambda: any("the load generator crashed; restarting it" in m
                                 for m in errors()), what="the crash to be reported")  # fmt: skip
            wait_for(lambda: subject.started == 2, what="the load to be started again")
            wait_for(lambda: (read_workload(lab.path) or {}).get("ops", 0) > 0,
                     what="the load to run again")  # fmt: skip
        finally:
            runner.stop()
        assert not [t for t in runner._threads if t.is_alive()]  # the load stopped with the rest
