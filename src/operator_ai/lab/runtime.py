"""Bringing a lab up and down: network, supervisor, node data dirs, and the subject's nodes."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from operator_ai.errors import LabError, SubjectUnreachable
from operator_ai.lab import docker, network, procs, safefs
from operator_ai.lab.state import (
    CLEAN_ENV,
    CLEAN_PATH,
    DOCKER,
    LOOPBACK,
    NETNS,
    TMPFS_SIZE,
    WRITABLE,
    LabDir,
    LabState,
    Node,
    door_socket,
    private_dir,
    supervisor_socket,
)
from operator_ai.lab.supervisor import Supervisor, start_door
from operator_ai.lab.supervisor import render_config as render_supervisor
from operator_ai.lab.supervisor import start as start_supervisor
from operator_ai.subjects import Observation, Subject, load_subject

Progress = Callable[[str], None]


def is_root() -> bool:
    return os.geteuid() == 0


def _quiet(_: str) -> None:
    pass


class Lab:
    """One lab directory and the running lab it describes."""

    def __init__(self, lab_dir: LabDir) -> None:
        self.dir = lab_dir
        self._state: LabState | None = None

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def state(self) -> LabState:
        if self._state is None:
            self._state = self.dir.load()
        return self._state

    @property
    def subject(self) -> Subject:
        return load_subject(self.state.subject)

    @property
    def supervisor(self) -> Supervisor | docker.Containers:
        """What starts and stops nodes: supervisord, or Docker for a Docker lab."""
        if self.state.mode == DOCKER:
            return docker.Containers(self.state)
        return Supervisor(supervisor_socket(self.path))

    def pid(self, node: str) -> int | None:
        info = self.supervisor.info(node)
        return int(info["pid"]) if info["statename"] == "RUNNING" and info["pid"] else None

    def observe(self, timeout: float = 2.0) -> Observation:
        return self.subject.observe(self.state, self.path, timeout)

    def leader(self, timeout: float = 2.0) -> str | None:
        try:
            return self.subject.leader(self.observe(timeout))
        except SubjectUnreachable:
            return None

    def running(self) -> bool:
        if self.state.mode == DOCKER:
            return docker.engine_problem() is None and docker.Containers(self.state).running()
        door = procs.still(self.state.door_pid, self.state.door_started)
        return self.supervisord is not None and door is not None

    @property
    def supervisord(self) -> procs.Proc | None:
        """The lab's supervisord, if it still runs: the very process `lab up` started."""
        return procs.still(self.state.supervisor_pid, self.state.supervisor_started)

    # -- up ----------------------------------------------------------------------------

    def up(
        self,
        subject: Subject,
        nodes: int,
        mode: str | None,
        user: str,
        progress: Progress = _quiet,
    ) -> LabState:
        """Start the lab, or return it as it is when it is already running.

        ``mode`` is netns or loopback (the process runtime) or docker; None picks the
        subject's first runtime, and netns as root, loopback otherwise."""
        runtimes = getattr(subject, "runtimes", ("process",))
        in_docker = mode == DOCKER or (mode is None and "process" not in runtimes)
        if in_docker:
            if DOCKER not in runtimes:
                raise LabError(
                    f"{subject.name} has no Docker lab",
                    hint=f"`operator lab up {subject.name}` runs it as processes.",
                )
            docker.require_engine(subject.name)
        elif "process" not in runtimes:
            raise LabError(
                f"{subject.name} runs only in Docker here (it has no process runtime)",
                hint=f"`operator lab up {subject.name} --runtime docker`.",
            )
        if self.dir.exists():
            if self.running():
                progress(f"lab {self.dir.name} is already up")
                return self.state
            progress("found a lab that is no longer running; cleaning it up first")
            self.down(progress)
        if in_docker:
            return self._up_docker(subject, nodes, progress)
        mode = mode or (NETNS if is_root() else LOOPBACK)
        if mode == NETNS and not is_root():
            raise LabError(
                "netns mode needs root (namespaces, nft, tmpfs mounts)",
                hint="Run as root, or pass --mode loopback (fewer faults, weaker isolation).",
            )
        if nodes < 1:
            raise LabError("a lab needs at least one node")
        if not is_root():
            user = pwd.getpwuid(os.geteuid()).pw_name
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise LabError(
                f"the lab user {user!r} does not exist",
                hint="`make setup` (as root) creates it, or set lab_user in the config.",
            ) from None

        topology = subject.topology(nodes)
        names = list(topology)
        state = LabState(
            name=self.dir.name,
            subject=subject.name,
            mode=mode,
            prefix=self.dir.prefix,
            user=user,
            nodes=[],
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            self._prepare_dirs(names, account, progress)
            _check_reachable(self.path, account)
            if mode == NETNS:
                progress(f"creating network namespaces ({state.prefix}-*)")
                subnet = network.pick_subnet(state.prefix)
                addresses = network.create(state.prefix, subnet, [*names, "ops"])
                state.subnet = str(subnet)
                state.host_address = addresses["host"]
                state.ops_address = addresses["ops"]
                state.ops_netns = f"{state.prefix}-ops"
                for member in [*names, "ops"]:
                    network.fence(f"{state.prefix}-{member}", state.host_address)
                state.nodes = [
                    Node(n, addresses[n], dict(topology[n]), f"{state.prefix}-{n}") for n in names
                ]
            else:
                state.nodes = [
                    Node(n, "127.0.0.1", {port: _free_port() for port in topology[n]})
                    for n in names
                ]
            self.dir.save(state)
            self._state = state

            commands = subject.node_commands(state, self.path)
            for node in state.nodes:
                node.command = commands[node.name]
                self.write_launcher(node)
            if is_root():
                safefs.chown_tree(self.path / "conf", account)
            safefs.write_file(
                self.path / "supervisord.conf", render_supervisor(self.path, state.prefix, names)
            )
            progress("starting supervisord")
            supervisord = start_supervisor(self.path, mode == NETNS, CLEAN_ENV)
            state.supervisor_pid, state.supervisor_started = supervisord
            self.dir.save(state)
            owner = (account.pw_uid, account.pw_gid) if is_root() else None
            state.door_pid, state.door_started = start_door(self.path, names, owner, CLEAN_ENV)
            self.dir.save(state)
            if mode == NETNS:
                for name in names:
                    self.mount_data(name, account)
            progress(f"starting {len(names)} {subject.name} nodes")
            self._check_launchers(names)
            Supervisor(supervisor_socket(self.path)).call("supervisor.startAllProcesses", True)
            self._wait_ready(progress)
        except BaseException:
            progress("start failed; cleaning up")
            self.down(_quiet)
            raise
        return state

    def _up_docker(self, subject: Subject, nodes: int, progress: Progress) -> LabState:
        """Write the subject's compose file and start it; the nodes' ports are published on
        127.0.0.1, so the monitor reaches them as it does a loopback lab's."""
        topology = subject.topology(nodes)
        state = LabState(
            name=self.dir.name,
            subject=subject.name,
            mode=DOCKER,
            prefix=self.dir.prefix,
            user=pwd.getpwuid(os.geteuid()).pw_name,
            nodes=[
                Node(n, "127.0.0.1", {p: _free_port() for p in ports})
                for n, ports in topology.items()
            ],
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            for sub in ("conf", "logs", "tmp"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            private_dir(self.path).mkdir(mode=0o700, exist_ok=True)
            spec = subject.compose(state, self.path)  # type: ignore[attr-defined]
            (self.path / "compose.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            self.dir.save(state)
            self._state = state
            progress(f"starting {len(state.nodes)} containers (images are pulled the first time)")
            for argv in docker.up(state, self.path):
                docker.run(argv, timeout=1800)
            self._wait_ready(progress, timeout=180)
        except BaseException:
            progress("start failed; cleaning up")
            self.down(_quiet)
            raise
        return state

    def _prepare_dirs(
        self, names: list[str], account: pwd.struct_passwd, progress: Progress
    ) -> None:
        """The lab's directories, the lab user's ones made anew: whatever an earlier lab's
        user left in them (links to root's files, say) is removed unread and reported."""
        self.path.mkdir(parents=True, exist_ok=True)
        if is_root():
            _unmount_under(self.path)
        for sub in ("", "run", "logs"):  # root's; the lab user reads, whatever the umask
            (self.path / sub).mkdir(exist_ok=True)
            os.chmod(self.path / sub, 0o755)
        private_dir(self.path).mkdir(exist_ok=True)
        os.chmod(private_dir(self.path), 0o700)
        for sub in ("conf", "data", "tmp"):
            for found in safefs.fresh_dir(self.path / sub, account.pw_uid):
                progress(f"removed what an earlier lab left: {found}")
        for name in names:
            (self.path / "data" / name).mkdir()
        if is_root():
            os.chmod(self.path / "data", 0o755)  # root's: the lab user owns each node's dir
            for name in names:
                os.chown(self.path / "data" / name, account.pw_uid, account.pw_gid)
            for sub, size in WRITABLE.items():  # capped, so the lab user cannot fill the host
                network.sh("mount", "-t", "tmpfs", "-o", _tmpfs_options(size, 0o755, account),
                           f"operator-{sub}", str(self.path / sub))  # fmt: skip

    def _check_launchers(self, names: list[str]) -> None:
        for name in names:
            if problem := safefs.check_launcher(self.path / "run" / f"{name}.sh"):
                raise LabError(f"refusing to start {name}: {problem}")

    def mount_data(self, node: str, account: pwd.struct_passwd) -> None:
        """Give a node's data dir its own tmpfs, inside the lab's private mount namespace."""
        path = self.path / "data" / node
        if path.is_symlink() or not path.is_dir():
            raise LabError(f"{path} is not a plain directory; not mounting on it")
        options = _tmpfs_options(TMPFS_SIZE, 0o700, account)
        self.in_mounts("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))

    def in_mounts(self, *argv: str) -> str:
        """Run a command in the lab's mount namespace (supervisord's)."""
        return network.sh(*self._enter_mounts(), *argv)

    def _enter_mounts(self) -> list[str]:
        """``nsenter`` into supervisord's mount namespace, only if it is still the process
        `lab up` started (root must not enter whatever namespace a reused PID has)."""
        proc = self.supervisord
        if proc is None:
            raise LabError("the lab's supervisord is not running")
        return ["nsenter", "-t", str(proc.pid), "-m", "--"]

    def as_user(self, *argv: str, input: str | None = None) -> str:
        """Run a command as the lab user in the lab's mounts: how root reads or writes in the
        places the lab user can write, so that a planted link gets it nothing more."""
        prefix: list[str] = []
        if self.state.mode == NETNS:
            prefix = self._enter_mounts()
        if is_root():
            prefix += as_lab_user(pwd.getpwnam(self.state.user))
        return network.sh(*prefix, *argv, input=input)

    def write_launcher(self, node: Node, env: dict[str, str] | None = None) -> None:
        """The script supervisord runs for a node: a clean environment, the node's network
        namespace, and the lab user. Root owns it, so the lab user cannot change what runs."""
        variables = {"PATH": CLEAN_PATH, "HOME": str(self.path / "tmp"), **(env or {})}
        prefix: list[str] = []
        if node.netns:
            prefix = ["nsenter", f"--net=/run/netns/{node.netns}", "--"]
        if is_root():
            prefix += as_lab_user(pwd.getpwnam(self.state.user))
        line = shlex.join(
            [*prefix, "env", "-i", *(f"{k}={v}" for k, v in variables.items()), *node.command]
        )
        script = self.path / "run" / f"{node.name}.sh"
        # 0700: what a fault changes in it (clock_skew's FAKETIME) would name the fault.
        text = f"#!/bin/sh\n# Written by `operator lab up`.\nexec {line}\n"
        safefs.write_file(script, text, mode=0o700)

    def heal(self, progress: Progress = _quiet, timeout: float = 30.0) -> None:
        """Revert every active fault, start every node, and wait until nothing is broken."""
        from operator_ai.lab import faults

        for injection in faults.Injections(self.path).active():
            progress(f"reverting {injection.fault} on {injection.target}")
            faults.revert(self, injection.id)
        if self.state.mode != DOCKER:
            self._check_launchers([n.name for n in self.state.nodes])
        for node in self.state.nodes:
            self.supervisor.start(node.name)
        self._wait_ready(progress, timeout)

    def _wait_ready(self, progress: Progress, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                observation = self.observe(timeout=1.0)
                # A missing leader is a violation of its own where a subject has one.
                violations = self.subject.check(observation, [])
                if not violations and not observation.unobserved:
                    progress("lab is healthy")
                    return
                last = "; ".join(v.message for v in violations) or (
                    f"cannot see {', '.join(observation.unobserved)} yet"
                )
            except SubjectUnreachable as exc:
                last = str(exc)
            time.sleep(0.2)
        raise LabError(
            f"the lab did not become healthy within {timeout:.0f} s: {last}",
            hint=f"Read the node logs in {self.path / 'logs'}.",
        )

    # -- down --------------------------------------------------------------------------

    def down(self, progress: Progress = _quiet) -> list[str]:
        """Stop everything the lab started and remove its namespaces; idempotent.

        Leftovers are found by the lab's directory and prefix, not only by what lab.json
        says, so this also cleans up after a CLI that crashed half-way."""
        removed: list[str] = []
        state: LabState | None
        try:
            state = self.dir.load() if self.dir.exists() else None
        except LabError:
            state = None
        failed: LabError | None = None
        if state and state.mode == DOCKER and docker.engine_problem() is None:
            progress("removing the lab's containers, network and volumes")
            try:
                docker.run(docker.down(state, self.path), timeout=300)
                removed.append(f"compose project {state.prefix}")
            except LabError as exc:  # clean up the rest all the same, then say so
                failed = exc
        if is_root():
            removed += docker.release_loops(self.path / "disks")
        supervisord = state and procs.still(state.supervisor_pid, state.supervisor_started)
        if supervisord:
            progress("stopping supervisord and its nodes")
            with contextlib.suppress(LabError):
                Supervisor(supervisor_socket(self.path), timeout=10).shutdown()
            deadline = time.monotonic() + 15
            while supervisord.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            removed.append(f"supervisord {supervisord.pid}")
        # Whatever still names the lab dir: the door, and the leftovers of a crash.
        leftovers = [p for p in map(procs.Proc.of, procs.referencing(str(self.path) + "/")) if p]
        if leftovers:
            progress(f"stopping {len(leftovers)} leftover processes")
            procs.terminate(leftovers)
            removed += [f"process {p.pid}" for p in leftovers]
        if is_root():
            removed += network.destroy(self.dir.prefix)
            removed += _unmount_under(self.path)
        from operator_ai.lab.faults import Injections

        Injections(self.path).close_all("lab down")
        if failed is not None:
            raise failed  # lab.json stays, so `lab down` can be run again
        (self.path / "lab.json").unlink(missing_ok=True)
        door_socket(self.path).unlink(missing_ok=True)
        self._state = None
        return removed

    def wipe(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Nodes run as the lab user, who must be able to reach their config and data."""
    if not is_root():
        return
    probe = [*as_lab_user(account), "test", "-x", str(path)]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise LabError(
            f"the lab user {account.pw_name!r} cannot reach {path}",
            hint="A parent directory is private (like /root). Point OPERATOR_HOME (or --home) "
            "somewhere the lab user can traverse, e.g. /var/lib/operator.",
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_lab_user(account: pwd.struct_passwd) -> list[str]:
    """The ``setpriv`` prefix that runs a command as ``account``, with no other groups."""
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
            "--clear-groups", "--"]  # fmt: skip


def _tmpfs_options(size: str, mode: int, account: pwd.struct_passwd) -> str:
    return (
        f"size={size},mode={mode:o},uid={account.pw_uid},gid={account.pw_gid},nosuid,nodev,noexec"
    )


def _unmount_under(path: Path) -> list[str]:
    """Mounts under the lab dir in *our* namespace; normally none (they live in the lab's)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith(str(path) + "/"):
            found.append(mount_point)
    for mount_point in sorted(found, reverse=True):
        network.sh("umount", "-l", mount_point, check=False)
    return [f"mount {m}" for m in found]
