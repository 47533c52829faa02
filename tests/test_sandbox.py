"""The sandboxes, checked by what a real command can and cannot do against a real etcd lab:
read the operator's secrets, write outside the lab, reach the host, reach the lab, leave
processes behind, exhaust processes, memory, disk or output. Also the unsafe host sandbox."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_helpers import ROOT, lab_home, running_lab, wait_for
from operator_ai.agent.worker import store_files
from operator_ai.errors import SandboxError
from operator_ai.lab import Lab, LabDir, procs
from operator_ai.sandbox import OUTPUT_CAP, limits, sandbox_for
from operator_ai.sandbox.bwrap import BwrapSandbox
from operator_ai.sandbox.host import HostSandbox
from operator_ai.sandbox.limits import PREFIX, Limits

pytestmark = [
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]
netns_only = pytest.mark.skipif(not ROOT, reason="the ops namespace needs root")

SECRET = "sk-test-SECRET-" + uuid.uuid4().hex
DB_MARKER = "operator-db-" + uuid.uuid4().hex
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """One etcd lab for the module, in a home holding a config with an API key and a
    database, both readable by anyone: only the sandbox stands between them and a command."""
    with lab_home() as home:
        (home / "config.toml").write_text(f'[anthropic]\napi_key = "{SECRET}"\n')
        (home / "operator.db").write_text(f"SQLite format 3\0{DB_MARKER}\n")
        for name in ("config.toml", "operator.db"):
            (home / name).chmod(0o644)
        with running_lab(home) as lab:
            yield lab


@pytest.fixture(scope="module")
def sandbox(lab: Lab) -> BwrapSandbox:
    built = sandbox_for(lab, home_of(lab))
    assert isinstance(built, BwrapSandbox)
    return built


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def home_of(lab: Lab) -> Path:
    return lab.path.parent.parent


def uid_processes(uid: int) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        try:
            status = Path(entry.path, "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if f"\nUid:\t{uid}\t" in status:
            found.add(int(entry.name))
    return found


def uid_threads(uid: int) -> int:
    """What RLIMIT_NPROC would count for ``uid`` outside a user namespace."""
    total = 0
    for pid in uid_processes(uid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += int(status.split("\nThreads:")[1].split()[0])
    return total


def node_pids(lab: Lab) -> dict[str, int]:
    return {p.name: p.pid for p in lab.control.statuses()}


def leftover_cgroups() -> list[Path]:
    return list(Path("/sys/fs/cgroup").glob(f"**/{PREFIX}{os.getpid()}-*"))


# -- secrets ----------------------------------------------------------------------------


def test_a_command_runs_as_the_lab_user_in_the_lab_dir_with_a_clean_environment(
    sandbox: BwrapSandbox, lab: Lab, secret_env: None
) -> None:
    result = sandbox.run("id -un; pwd; env")
    assert result.exit_code == 0, result.stderr
    user, cwd, *env = result.stdout.splitlines()
    assert user == lab.state.user
    assert cwd == str(lab.path.resolve())
    assert {line.split("=", 1)[0] for line in env} <= {"PATH", "HOME", "LANG", "TERM", "PWD",
                                                       "SHLVL", "_"}  # fmt: skip
    assert "HOME=/tmp" in env
    assert sandbox.warning is None if ROOT else "loopback" in (sandbox.warning or "")


def test_the_api_key_is_in_no_environment_and_no_file_the_command_can_see(
    sandbox: BwrapSandbox, lab: Lab, secret_env: None
) -> None:
    home = home_of(lab)
    assert os.environ["ANTHROPIC_API_KEY"] == SECRET
    assert SECRET in (home / "config.toml").read_text()  # there, and readable by anyone

    environs = sandbox.run("env; cat /proc/[0-9]*/environ | tr '\\0' '\\n'")
    assert "PATH=" in environs.stdout  # the environ files were readable: only clean ones
    assert SECRET not in environs.stdout + environs.stderr

    files = sandbox.run(f"ls -A {home}; cat {home}/config.toml")
    assert files.stdout.split() == ["labs"]
    assert f"{home}/config.toml: No such file or directory" in files.stderr
    found = sandbox.run("find / -xdev -name config.toml -path '*operator-test*' 2>/dev/null")
    assert found.stdout == ""
    assert SECRET not in files.stdout + files.stderr + found.stdout


def test_the_operator_database_cannot_be_read(sandbox: BwrapSandbox, lab: Lab) -> None:
    home = home_of(lab)
    result = sandbox.run(f"cat {home}/operator.db; ls -A {home}")
    assert result.exit_code == 0  # ls succeeded; cat did not
    assert DB_MARKER not in result.stdout + result.stderr
    assert "No such file or directory" in result.stderr
    assert result.stdout.split() == ["labs"]


@pytest.mark.parametrize("parent", ["/var/tmp", "/etc"])
def test_a_database_kept_outside_home_is_hidden_too(lab: Lab, parent: str) -> None:
    """Outside the system directories nothing of the host is bound at all; inside one (a
    store kept in /etc, say) the store's files are masked."""
    with tempfile.TemporaryDirectory(prefix="operator-db-", dir=parent) as where:
        Path(where).chmod(0o755)
        db = Path(where) / "store.db"
        db.write_text(DB_MARKER)
        db.chmod(0o644)
        sandbox = sandbox_for(lab, home_of(lab), hide=store_files(f"sqlite:///{db}"))
        result = sandbox.run(f"cat {db}; echo")
        assert result.exit_code == 0
        assert DB_MARKER not in result.stdout
        control = sandbox_for(lab, home_of(lab)).run(f"cat {db}").stdout
        assert (DB_MARKER in control) == (parent == "/etc")  # bound only inside /etc


# -- the file system --------------------------------------------------------------------


def test_nothing_outside_the_lab_dir_and_tmp_can_be_written(
    sandbox: BwrapSandbox, lab: Lab
) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    for target in [Path("/etc"), Path("/usr/bin"), home_of(lab), REPO, Path("/var/tmp")]:
        result = sandbox.run(f"echo x > {target}/{name}")
        # A home under /tmp lies in the sandbox's private /tmp, where a write goes nowhere.
        assert result.exit_code != 0 or target.is_relative_to("/tmp"), target
        assert not (target / name).exists(), target
    # /var/tmp is writable by anyone on the host: in the sandbox it does not exist.
    assert "No such file or directory" in result.stderr

    result = sandbox.run(f"echo lab > tmp/{name} && echo private > /tmp/{name} && echo ok")
    assert result.stdout == "ok\n", result.stderr
    try:
        assert (lab.path / "tmp" / name).read_text() == "lab\n"
        assert not Path("/tmp", name).exists()  # the sandbox's /tmp is its own
    finally:
        (lab.path / "tmp" / name).unlink(missing_ok=True)
    assert sandbox.run(f"cat /tmp/{name}").exit_code != 0  # and new for every command


def test_host_tmp_is_invisible(sandbox: BwrapSandbox) -> None:
    marker = Path("/tmp", f"host-only-{uuid.uuid4().hex[:8]}")
    marker.write_text("host\n")
    try:
        result = sandbox.run(f"cat {marker}; ls -A /tmp")
        assert result.exit_code == 0
        assert "host" not in result.stdout and marker.name not in result.stdout
    finally:
        marker.unlink()


def test_the_lab_dir_shows_the_nodes_real_data(sandbox: BwrapSandbox, lab: Lab) -> None:
    node = lab.state.nodes[0].name
    result = sandbox.run(f"ls data/{node}")
    assert result.exit_code == 0 and "member" in result.stdout.split(), result


# -- the network ------------------------------------------------------------------------


@pytest.fixture
def host_server() -> Iterator[tuple[int, list[object]]]:
    """A TCP server on all the host's addresses; the list collects accepted connections."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            accepted.append(peer)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@netns_only
def test_the_host_cannot_be_reached(
    sandbox: BwrapSandbox, lab: Lab, host_server: tuple[int, list[object]]
) -> None:
    port, accepted = host_server
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the server works
    wait_for(lambda: accepted, timeout=5, what="the control connection")
    accepted.clear()
    for address in ("127.0.0.1", lab.state.host_address):
        result = sandbox.run(f"timeout 3 bash -c 'echo hi > /dev/tcp/{address}/{port}'")
        assert result.exit_code != 0, (address, result)
    assert accepted == []


def test_the_lab_nodes_and_its_supervisor_can_be_reached(sandbox: BwrapSandbox, lab: Lab) -> None:
    result = sandbox.run(f"supervisorctl -c {lab.path}/supervisord.conf status")
    assert result.exit_code == 0, result
    states = dict(line.split()[:2] for line in result.stdout.splitlines())
    assert states == {node.name: "RUNNING" for node in lab.state.nodes}

    endpoints = ",".join(node.url() for node in lab.state.nodes)
    result = sandbox.run(f"etcdctl --endpoints={endpoints} -w json endpoint status")
    assert result.exit_code == 0, result
    assert len(json.loads(result.stdout)) == len(lab.state.nodes)


# -- processes --------------------------------------------------------------------------


def test_a_fork_bomb_is_contained_and_leaves_the_lab_running(
    sandbox: BwrapSandbox, lab: Lab
) -> None:
    # Each bomb's forks keep its command line, tagged so that only this test's processes
    # are counted: other labs may run as the same lab user.
    tag = f"bomb-{uuid.uuid4().hex[:8]}"
    nodes_before = node_pids(lab)

    classic = sandbox.run(f":(){{ :|:& }};: # {tag}", timeout=10)  # forks in the background
    assert not classic.timed_out
    assert procs.referencing(tag) == []
    bounded = sandbox.run(f"bomb() {{ bomb | bomb; }}; bomb # {tag}", timeout=5)
    assert bounded.timed_out and bounded.exit_code == 124
    assert bounded.duration_ms < 15_000
    assert "Resource temporarily unavailable" in bounded.stderr  # it hit the limit
    assert procs.referencing(tag) == []

    assert node_pids(lab) == nodes_before
    assert all(p.state == "RUNNING" for p in lab.control.statuses())
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still fork
    assert sandbox.run("echo still here").stdout == "still here\n"
    assert leftover_cgroups() == []


def test_a_background_child_dies_when_the_command_exits(sandbox: BwrapSandbox) -> None:
    marker = "1000.123"
    result = sandbox.run(f"sleep {marker} & echo started")
    assert result.stdout == "started\n"
    assert result.duration_ms < 5_000  # the sleep held stdout; run did not wait for it
    assert procs.referencing(marker) == []


def test_a_timeout_kills_the_command_and_everything_it_started(
    sandbox: BwrapSandbox,
) -> None:
    marker = "1000.456"
    started = time.monotonic()
    result = sandbox.run(f"(sleep {marker} &); echo begun; sleep {marker}", timeout=2)
    assert time.monotonic() - started < 6
    assert (result.exit_code, result.timed_out, result.stdout) == (124, True, "begun\n")
    assert procs.referencing(marker) == []
    assert leftover_cgroups() == []


def test_without_a_cgroup_rlimit_nproc_alone_contains_a_fork_bomb(
    sandbox: BwrapSandbox, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no pids controller is usable (no root, cgroup v2 not delegated to us)."""
    monkeypatch.setattr(limits.CommandCgroup, "create", classmethod(lambda cls, limits: None))
    tag = f"bomb-{uuid.uuid4().hex[:8]}"
    nodes_before = node_pids(lab)

    # The limit counts this command's tasks only, not the nodes' threads (the same uid).
    small = BwrapSandbox(lab, home_of(lab), limits=Limits(tasks=16))
    assert uid_threads(sandbox.user.pw_uid) > 16
    result = small.run("ulimit -u; for i in $(seq 10); do sleep 30 & done; echo started")
    assert (result.stdout, result.stderr) == ("16\nstarted\n", "")

    result = sandbox.run(f"bomb() {{ bomb | bomb; }}; bomb # {tag}", timeout=5)
    assert result.timed_out
    assert "Resource temporarily unavailable" in result.stderr
    assert procs.referencing(tag) == []  # gone by the time run returned
    assert node_pids(lab) == nodes_before
    assert sandbox.run("echo fine").stdout == "fine\n"


# -- output, files, results -------------------------------------------------------------


def test_100_mb_of_output_is_capped_while_it_streams(sandbox: BwrapSandbox) -> None:
    size = 100_000_000
    tracemalloc.start()
    try:
        result = sandbox.run(f"yes | head -c {size}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    assert result.truncated and result.dropped_bytes == size - OUTPUT_CAP
    assert result.stdout.startswith("y\ny\n") and result.stdout.endswith("y\ny\n")
    assert f"[... {size - OUTPUT_CAP:,} bytes dropped ...]" in result.stdout
    assert len(result.stdout) < OUTPUT_CAP + 100
    assert peak < 16 * 1024 * 1024, f"peak Python memory {peak / 1e6:.1f} MB"


def test_output_up_to_the_cap_comes_back_whole() -> None:
    host = HostSandbox()
    whole = host.run(f"head -c {OUTPUT_CAP} /dev/zero | tr '\\0' a; echo -n b >&2")
    assert (len(whole.stdout), whole.stderr, whole.truncated) == (OUTPUT_CAP, "b", False)
    over = host.run(f"head -c {OUTPUT_CAP + 1} /dev/zero | tr '\\0' a")
    assert (over.truncated, over.dropped_bytes) == (True, 1)


def test_a_huge_file_cannot_be_written(sandbox: BwrapSandbox) -> None:
    limit = Limits().file_size
    result = sandbox.run(
        f"head -c {limit + 10 * 1024 * 1024} /dev/zero > /tmp/big; echo status=$?; "
        "stat -c %s /tmp/big"
    )
    status, size = result.stdout.split()
    assert status == "status=153"  # 128 + SIGXFSZ
    assert int(size) == limit


def test_exit_codes_stderr_and_duration_come_back(sandbox: BwrapSandbox) -> None:
    result = sandbox.run("echo out; echo err >&2; sleep 0.3; exit 7")
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert 300 <= result.duration_ms < 10_000
    assert not result.timed_out and not result.truncated
    assert sandbox.run("kill -9 $$").exit_code == 137
    assert sandbox.run("no-such-command-here").exit_code == 127
    nul = sandbox.run("echo a\0b")  # no shell can take it: a failed command, not an error
    assert nul.exit_code == 2 and "NUL" in nul.stderr


# -- start errors -----------------------------------------------------------------------


@netns_only
def test_a_lab_whose_ops_namespace_is_gone_cannot_get_a_sandbox(lab: Lab) -> None:
    with lab_home() as other:
        ghost = LabDir(other, "ghost")
        ghost.path.mkdir(parents=True)
        state = json.loads((lab.path / "lab.json").read_text())
        state.update(name="ghost", prefix="opdead00", ops_netns="opdead00-ops")
        (ghost.path / "lab.json").write_text(json.dumps(state))
        sandbox = BwrapSandbox(Lab(ghost), other)
        with pytest.raises(SandboxError, match=r"ops network namespace .* is gone") as caught:
            sandbox.run("true")
        assert "lab up" in caught.value.hint


def test_a_lab_that_is_not_up_cannot_get_a_sandbox() -> None:
    with lab_home() as other, pytest.raises(SandboxError, match="no lab named"):
        BwrapSandbox(Lab(LabDir(other, "etcd")), other)


def test_missing_or_failing_bubblewrap_is_a_sandbox_error(lab: Lab) -> None:
    home = home_of(lab)
    with pytest.raises(SandboxError, match="not installed") as caught:
        BwrapSandbox(lab, home, bwrap="/nonexistent/bwrap")
    assert "make setup" in caught.value.hint
    broken = BwrapSandbox(lab, home, bwrap="false")  # exits before setting anything up
    with pytest.raises(SandboxError, match="did not start"):
        broken.run("true")


# -- the unsafe host sandbox ------------------------------------------------------------


def test_the_host_sandbox_runs_commands_with_a_clean_environment(
    tmp_path: Path, secret_env: None
) -> None:
    sandbox = HostSandbox(cwd=tmp_path)
    assert "unsafe-host" in sandbox.warning
    result = sandbox.run("pwd; env; echo err >&2; exit 3")
    assert result.exit_code == 3 and result.stderr == "err\n"
    assert result.stdout.splitlines()[0] == str(tmp_path)
    assert SECRET not in result.stdout
    assert "TERM=dumb" in result.stdout


def test_the_host_sandbox_times_out_and_kills_the_process_group() -> None:
    marker = "1000.789"
    result = HostSandbox().run(f"sleep {marker} & echo begun; sleep {marker}", timeout=1)
    assert (result.exit_code, result.timed_out, result.stdout) == (124, True, "begun\n")
    assert result.duration_ms < 5_000
    # SIGKILL is delivered at once, but the orphaned sleep is reaped by init in its time.
    wait_for(lambda: not procs.referencing(marker), timeout=5, what="the group to die")
    quick = HostSandbox().run(f"sleep {marker} & echo done")
    assert quick.stdout == "done\n" and quick.duration_ms < 5_000
    wait_for(lambda: not procs.referencing(marker), timeout=5, what="the group to die")


def test_a_loopback_lab_gets_a_sandbox_on_the_host_network_that_says_so() -> None:
    with lab_home() as home, running_lab(home, mode="loopback", name="loop") as lab:
        sandbox = sandbox_for(lab, home)
        assert isinstance(sandbox, BwrapSandbox) and sandbox.isolation == "loopback"
        assert "127.0.0.1" in (sandbox.warning or "")
        node = lab.state.nodes[0]
        result = sandbox.run(
            f"id -un; ls -A {home}; etcdctl --endpoints={node.url()} endpoint health 2>&1; "
            f"supervisorctl -c {lab.path}/supervisord.conf status {node.name}"
        )
        assert result.exit_code == 0, result
        user, listed, health, status = result.stdout.splitlines()
        assert (user, listed) == (lab.state.user, "labs")
        assert "is healthy" in health and "RUNNING" in status


def test_sandbox_for_builds_the_host_sandbox_only_when_asked(lab: Lab) -> None:
    assert isinstance(sandbox_for(lab, home_of(lab), unsafe_host=True), HostSandbox)
    assert isinstance(sandbox_for(lab, home_of(lab)), BwrapSandbox)
