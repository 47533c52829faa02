"""The etcd subject against a real 3-member cluster: each fault opens the right ticket, and
the ticket clears once the cluster is whole again. One lab serves the module; every test
heals it before the next one starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from lab_helpers import ROOT, cycle_for, cycle_until, lab_home, live, running_lab, wait_for
from operator_ai.errors import FaultUnsupported, LabError, UsageError
from operator_ai.lab import Lab
from operator_ai.lab import injections as chaos
from operator_ai.lab.faults import helpers
from operator_ai.monitor import Monitor
from operator_ai.store import Store
from operator_ai.store.records import Status

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
netns_only = pytest.mark.skipif(not ROOT, reason="netns mode (and this fault) needs root")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_home() as home, running_lab(home) as lab:
        yield lab


@pytest.fixture
def monitor(lab: Lab, tmp_path: Path) -> Iterator[Monitor]:
    store = Store(f"sqlite:///{tmp_path / 'operator.db'}")
    try:
        yield Monitor(store, lab.subject, lab.cluster, interval=1.0)
    finally:
        lab.heal()
        store.close()


def follower(lab: Lab) -> str:
    leader = lab.leader()
    return next(n.name for n in lab.state.nodes if n.name != leader)


def test_killing_a_follower_opens_member_down_and_a_restart_clears_it(
    lab: Lab, monitor: Monitor
) -> None:
    target = follower(lab)
    key = f"etcd:member_down:{target}"
    chaos.inject(lab, "kill", target, {})
    cycle_until(monitor, lambda: live(monitor.store, key), what=key)

    ctl = ["supervisorctl", "-c", str(lab.path / "supervisord.conf"), "start", target]
    started = subprocess.run(ctl, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    ticket = monitor.store.tickets()[0]
    cycle_until(monitor, lambda: monitor.store.ticket(ticket.id).status == Status.RESOLVED)
    resolved = monitor.store.ticket(ticket.id)
    assert resolved.key == key
    assert resolved.resolved_by == "monitor"


def test_killing_the_leader_elects_another_and_leaves_no_no_leader_ticket(
    lab: Lab, monitor: Monitor
) -> None:
    old = lab.leader()
    chaos.inject(lab, "kill", "leader", {})
    cycle_until(monitor, lambda: lab.leader() not in (None, old), what="a new leader")
    down = f"etcd:member_down:{old}"
    cycle_until(monitor, lambda: live(monitor.store, down), what=down)
    # What must not happen takes watching: no_leader's whole grace period, and then some.
    grace = max(i.grace_seconds for i in lab.subject.invariants if i.name == "no_leader")
    cycle_for(monitor, grace + 2)
    keys = [t.key for t in monitor.store.live()]
    assert keys == [f"etcd:member_down:{old}"]


@netns_only
def test_a_partitioned_member_is_named_and_healing_clears_it(lab: Lab, monitor: Monitor) -> None:
    target = follower(lab)
    injection = chaos.inject(lab, "partition", target, {})
    cycle_until(
        monitor, lambda: any(t.target == target for t in monitor.store.live()), what="a ticket"
    )
    opened = [t for t in monitor.store.live() if t.target == target]
    assert {t.invariant for t in opened} <= {"no_leader", "raft_index_lag", "member_slow"}

    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: not monitor.store.live(), what="every ticket cleared")
    assert all(monitor.store.ticket(t.id).resolved_by == "monitor" for t in opened)


@netns_only
def test_total_packet_loss_cuts_a_member_off_and_the_revert_brings_it_back(
    lab: Lab, monitor: Monitor
) -> None:
    target = follower(lab)
    injection = chaos.inject(lab, "loss", target, {"percent": "100"})
    key = f"etcd:member_down:{target}"
    cycle_until(monitor, lambda: live(monitor.store, key), what=key)
    assert lab.cluster.pid(target) is not None  # running, just unreachable

    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: not monitor.store.live(), what="every ticket cleared")


def test_cpu_stress_runs_stress_ng_until_reverted(lab: Lab) -> None:
    injection = chaos.inject(lab, "cpu_stress", None, {"load": "10", "timeout": "60"})
    try:
        [helper] = helpers(injection)
        # The helper is `env -C DIR stress-ng ...` until env execs: wait for stress-ng itself.
        comm = Path(f"/proc/{helper.pid}/comm")
        wait_for(lambda: comm.exists() and comm.read_text().startswith("stress-ng"), timeout=10,
                 what="stress-ng to start")  # fmt: skip
        assert helper.alive()
    finally:
        chaos.revert(lab, injection.id)
    wait_for(lambda: not helper.alive(), timeout=10, what="stress-ng to stop")


@netns_only
def test_a_full_disk_crashes_the_member_and_it_cannot_restart(lab: Lab, monitor: Monitor) -> None:
    target = follower(lab)
    # Writes make the member touch its full disk.
    writer = threading.Thread(target=_write, args=(lab, 3.0), daemon=True)
    writer.start()
    try:
        injection = chaos.inject(lab, "disk_full", target, {})
        cycle_until(monitor, lambda: live(monitor.store, f"etcd:member_down:{target}"))
    finally:
        writer.join()
    log = (lab.path / "logs" / f"{target}.log").read_text()
    assert "no space left on device" in log

    with pytest.raises(LabError, match="SPAWN_ERROR"):
        lab.control.start(target)
    assert lab.cluster.pid(target) is None
    chaos.revert(lab, injection.id)


def _write(lab: Lab, seconds: float) -> None:
    lab.subject.load(lab.cluster, 100, seconds, lambda _stats: None, threading.Event())


def test_the_nospace_alarm_opens_alarm_active(lab: Lab, monitor: Monitor) -> None:
    injection = chaos.inject(lab, "nospace", None, {})
    cycle_until(monitor, lambda: live(monitor.store, "etcd:alarm_active:NOSPACE"))
    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: not live(monitor.store, "etcd:alarm_active:NOSPACE"))


def test_a_restarted_monitor_keeps_the_same_ticket(lab: Lab, monitor: Monitor) -> None:
    target = follower(lab)
    key = f"etcd:member_down:{target}"
    chaos.inject(lab, "kill", target, {})
    cycle_until(monitor, lambda: live(monitor.store, key))
    first = live(monitor.store, key)
    assert first is not None

    restarted = Monitor(monitor.store, lab.subject, lab.cluster, interval=1.0)
    cycle_for(restarted, 3)
    same = [t for t in monitor.store.tickets() if t.key == key]
    assert [t.id for t in same] == [first.id]
    assert same[0].status == Status.OPEN and same[0].occurrences > first.occurrences


def test_with_every_member_down_one_unobservable_ticket_opens_and_nothing_clears(
    lab: Lab, monitor: Monitor
) -> None:
    target = follower(lab)
    chaos.inject(lab, "kill", target, {})
    cycle_until(monitor, lambda: live(monitor.store, f"etcd:member_down:{target}"))
    for node in lab.state.nodes:
        lab.control.stop(node.name)
    cycle_until(monitor, lambda: live(monitor.store, "etcd:subject_unobservable:cluster"))
    cycle_for(monitor, 3)

    tickets = monitor.store.tickets()
    assert sorted(t.key for t in tickets) == sorted(
        [f"etcd:member_down:{target}", "etcd:subject_unobservable:cluster"]
    )
    assert all(t.status == Status.OPEN for t in tickets)


def test_quorum_loss_fails_the_workload_and_leaves_no_leader(lab: Lab, monitor: Monitor) -> None:
    loader = threading.Thread(target=_write, args=(lab, 15.0), daemon=True)
    loader.start()
    try:
        chaos.inject(lab, "quorum_loss", None, {})
        cycle_until(monitor, lambda: live(monitor.store, "etcd:workload_errors:workload"))
        assert live(monitor.store, "etcd:no_leader:cluster")
    finally:
        loader.join()


@netns_only
def test_pause_and_delay_are_seen(lab: Lab, monitor: Monitor) -> None:
    target = follower(lab)
    paused = chaos.inject(lab, "pause", target, {})
    cycle_until(monitor, lambda: live(monitor.store, f"etcd:member_down:{target}"))
    chaos.revert(lab, paused.id)

    delayed = chaos.inject(lab, "delay", target, {"ms": "300"})
    cycle_until(monitor, lambda: live(monitor.store, f"etcd:member_slow:{target}"))
    chaos.revert(lab, delayed.id)
    cycle_until(monitor, lambda: not monitor.store.live(), what="every ticket cleared")


def test_clock_skew_is_refused_for_go_binaries(lab: Lab) -> None:
    with pytest.raises(FaultUnsupported, match="Go binary"):
        chaos.inject(lab, "clock_skew", "etcd1", {"seconds": "30"})
    assert not chaos.Injections(lab.path).active()


def test_bad_fault_requests_say_what_is_valid(lab: Lab) -> None:
    with pytest.raises(UsageError, match="no fault named 'nope'"):
        chaos.inject(lab, "nope", "etcd1", {})
    with pytest.raises(UsageError, match="valid: workers, load, timeout"):
        chaos.inject(lab, "cpu_stress", None, {"seconds": "3"})
    with pytest.raises(UsageError, match="has no node 'etcd9'"):
        chaos.inject(lab, "kill", "etcd9", {})


@netns_only
def test_a_stale_wal_panics_on_restart_until_the_member_is_replaced(
    lab: Lab, monitor: Monitor
) -> None:
    target = follower(lab)
    injection = chaos.inject(lab, "stale_wal", target, {})
    cycle_until(monitor, lambda: live(monitor.store, f"etcd:member_down:{target}"))

    with pytest.raises(LabError, match="SPAWN_ERROR"):
        lab.control.start(target)
    assert "is out of range" in (lab.path / "logs" / f"{target}.log").read_text()

    chaos.revert(lab, injection.id)  # replaces the member
    cycle_until(monitor, lambda: not monitor.store.live(), what="every ticket cleared")
    assert len(lab.observe().cluster["members"]) == 3


def test_the_cli_reverts_a_timed_fault_on_sigterm_and_monitor_once_says_what_it_saw(
    lab: Lab, monitor: Monitor
) -> None:
    home = lab.path.parent.parent
    target = follower(lab)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
    inject = subprocess.Popen(
        [sys.executable, "-m", "operator_ai", "chaos", "inject", "stop", "-t", target,
         "--duration", "300"],
        env={**env, "OPERATOR_HOME": str(home)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: lab.cluster.pid(target) is None, what=f"{target} to stop")
        db = f"sqlite:///{home / 'once.db'}"
        once = run_cli("monitor", "run", "--lab", "etcd", "--once", home=home,
                       env={"OPERATOR_DB": db})  # fmt: skip
        assert once.returncode == 0, once.stderr
        assert f"seen, not a ticket until it lasts 1 s: etcd:member_down:{target}" in once.stdout

        logs = run_cli("lab", "logs", target, "-n", "5", home=home)
        assert logs.returncode == 0 and logs.stdout.strip()

        inject.send_signal(signal.SIGTERM)
        output, _ = inject.communicate(timeout=60)
    finally:
        inject.kill()
    assert inject.returncode == 0, output
    assert "reverted injection" in output
    assert lab.cluster.pid(target) is not None  # the revert started it again
    assert not chaos.Injections(lab.path).active()
