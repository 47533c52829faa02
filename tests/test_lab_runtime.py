"""The lab runtime through the real CLI: up, status, down (idempotent, and after a crash),
loopback mode, and the faults it refuses there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from lab_helpers import ROOT, lab_home, wait_for
from operator_ai.lab import Lab, LabDir, procs

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")


@pytest.fixture
def home() -> Iterator[Path]:
    with lab_home() as path:
        yield path
        run_cli("lab", "down", "--lab", "etcd", home=path)  # whatever a failed test left


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def leftovers(home: Path) -> list[str]:
    lab_dir = LabDir(home, "etcd")
    found = [f"pid {pid}" for pid in procs.referencing(str(lab_dir.path) + "/")]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line for line in netns.splitlines() if line.startswith(lab_dir.prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
              if line.split(":")[1].strip().startswith(lab_dir.prefix)]  # fmt: skip
    # Our own mount namespace: the nodes' tmpfs mounts live in supervisord's private one,
    # which dies with it (the pid check above covers that).
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {m.split()[4]}" for m in mounts if m.split()[4].startswith(str(lab_dir.path))]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {t}" for t in tables.splitlines() if lab_dir.prefix in t]
    return found


@pytest.mark.skipif(not ROOT, reason="netns mode needs root")
def test_up_status_and_down_leave_nothing_behind(home: Path) -> None:
    ok(run_cli("lab", "up", "etcd", home=home))
    status = json.loads(ok(run_cli("lab", "status", "--json", home=home)))
    assert status["mode"] == "netns" and status["supervisor"]["running"]
    assert [n["state"] for n in status["nodes"]] == ["RUNNING"] * 3
    assert [n["role"] for n in status["nodes"]].count("leader") == 1
    assert all(n["address"].startswith("10.") for n in status["nodes"])
    assert leftovers(home)

    # Nodes run as the unprivileged lab user, not as root.
    pid = status["nodes"][0]["pid"]
    assert os.stat(f"/proc/{pid}").st_uid != 0

    ok(run_cli("lab", "down", "--lab", "etcd", home=home))
    assert leftovers(home) == []
    ok(run_cli("lab", "down", "--lab", "etcd", home=home))  # idempotent
    result = run_cli("lab", "status", home=home)
    assert result.returncode == 1 and "lab up" in result.stderr


@pytest.mark.skipif(not ROOT, reason="netns mode needs root")
def test_down_cleans_up_after_a_crashed_supervisor_and_a_lost_lab_json(home: Path) -> None:
    ok(run_cli("lab", "up", "etcd", home=home))
    lab = Lab(LabDir(home, "etcd"))
    pid = lab.state.supervisor_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the nodes are orphaned, still running
    (lab.path / "lab.json").unlink()
    assert leftovers(home)

    ok(run_cli("lab", "down", "--lab", "etcd", home=home))
    assert leftovers(home) == []


def test_loopback_mode_runs_and_refuses_network_faults(home: Path) -> None:
    ok(run_cli("lab", "up", "etcd", "--mode", "loopback", home=home))
    status = json.loads(ok(run_cli("lab", "status", "--json", home=home)))
    assert status["mode"] == "loopback"
    assert all(n["address"].startswith("127.0.0.1:") for n in status["nodes"])

    refused = run_cli("chaos", "inject", "partition", "--target", "etcd1", home=home)
    assert refused.returncode == 1 and "loopback" in refused.stderr

    injected = json.loads(
        ok(run_cli("chaos", "inject", "kill", "-t", "follower", "--json", home=home))
    )
    status = json.loads(ok(run_cli("lab", "status", "--json", home=home)))
    down = [n for n in status["nodes"] if n["name"] == injected["target"]]
    assert down[0]["state"] != "RUNNING"
    assert [f["id"] for f in status["faults"]] == [injected["id"]]

    ok(run_cli("chaos", "revert", "--all", home=home))
    listed = json.loads(ok(run_cli("chaos", "list", "--history", "--json", home=home)))
    assert listed["injections"][0]["reverted_at"] is not None
    assert {"kill", "partition", "nospace", "stale_wal"} <= {f["name"] for f in listed["faults"]}

    before = json.loads(ok(run_cli("lab", "status", "--json", home=home)))
    reset = json.loads(ok(run_cli("lab", "reset", "--json", home=home)))
    assert [n["name"] for n in reset["nodes"]] == [n["name"] for n in before["nodes"]]
    assert all(n["healthy"] for n in reset["nodes"]) and reset["faults"] == []
    listed = json.loads(ok(run_cli("chaos", "list", "--history", "--json", home=home)))
    assert listed["injections"] == []  # reset wipes the fault history too
    ok(run_cli("lab", "down", home=home))
    assert leftovers(home) == []


def test_subjects_are_plugins_listed_by_the_cli(home: Path) -> None:
    subjects = json.loads(ok(run_cli("subjects", "list", "--json", home=home)))
    etcd = next(s for s in subjects if s["name"] == "etcd")
    assert "member_down" in [i["name"] for i in etcd["invariants"]]
    result = run_cli("lab", "up", "nope", home=home)
    assert result.returncode == 1 and "subjects list" in result.stderr


def _spawn_with_pid(pid: int, argv: list[str]) -> subprocess.Popen[bytes] | None:
    """Start ``argv`` as PID ``pid``, by setting the last PID handed out (root only); None if
    another process keeps taking it first."""
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(argv)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.skipif(not ROOT, reason="reusing a PID on purpose needs root (ns_last_pid)")
def test_a_revert_leaves_alone_the_process_that_took_an_exited_helpers_pid(
    tmp_path: Path,
) -> None:
    """A helper (stress-ng, say) exits by itself; the kernel gives its PID to another
    process; the revert, and `lab down`'s close_all, must not signal that one."""
    from operator_ai.lab import faults, injections

    helper = procs.spawn(["true"], tmp_path / "helper.log")
    wait_for(lambda: not helper.alive(), timeout=10, what="the helper to exit")
    # Start times count clock ticks (10 ms): a reuse within the same tick, which only a
    # forced one like this can be, would look the same. Let a tick or two pass first.
    ticks = os.sysconf("SC_CLK_TCK")
    wait_for(lambda: time.clock_gettime(time.CLOCK_BOOTTIME) * ticks > helper.started + 2,
             timeout=5, what="the next clock tick")  # fmt: skip
    other = _spawn_with_pid(helper.pid, ["sleep", "60"])
    if other is None:
        pytest.skip(f"could not get PID {helper.pid} back for the test")
    try:
        assert procs.Proc.of(helper.pid) != helper  # same PID, another process
        record = injections.Injections(tmp_path)
        injection = record.add("cpu_stress", "cluster", {}, {
            "helpers": [helper], "injected_at": "2026-12-01T00:00:00+00:00"})  # fmt: skip
        faults.CpuStress().revert(None, injection)  # type: ignore[arg-type]  # uses no lab
        record.close_all("lab down")
        assert other.poll() is None  # untouched
        assert record.active() == []
    finally:
        other.kill()
        other.wait()


def test_a_process_is_known_by_its_pid_and_its_start_time(tmp_path: Path) -> None:
    """Without root too: the same PID with another start time is not the process, and
    nothing is signalled through it; the identity survives the fault record's JSON."""
    from operator_ai.lab import faults, injections

    child = procs.spawn(["sleep", "60"], tmp_path / "sleep.log")
    try:
        assert child.alive()
        impostor = procs.Proc(child.pid, child.started + 1)
        assert not impostor.alive() and not impostor.signal(signal.SIGKILL)
        assert child.alive()  # the signal went nowhere
        record = injections.Injections(tmp_path)
        record.add("cpu_stress", "cluster", {}, {
            "helpers": [child, impostor], "injected_at": "2026-12-01T00:00:00+00:00"})  # fmt: skip
        [stored] = record.all()
        assert faults.helpers(stored) == [child, impostor]
        assert procs.still(child.pid, child.started) == child
        assert procs.still(child.pid, child.started + 1) is None
    finally:
        procs.terminate([child], grace=5.0)
    assert not child.alive()
