"""The process runtime: a subject's nodes as processes under supervisord, each in its own
network namespace (netns mode, as root) or on loopback ports (loopback mode)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from operator_ai.core import LOOPBACK, NETNS, Subject
from operator_ai.errors import LabError
from operator_ai.lab import network, procs, safefs
from operator_ai.lab.network import free_port
from operator_ai.lab.state import (
    CLEAN_ENV,
    CLEAN_PATH,
    TMPFS_SIZE,
    WRITABLE,
    LabDir,
    LabNode,
    LabState,
    Progress,
    private_dir,
    supervisor_socket,
)
from operator_ai.lab.supervisor import Supervisor, start_door
from operator_ai.lab.supervisor import render_config as render_supervisor
from operator_ai.lab.supervisor import start as start_supervisor


def is_root() -> bool:
    return os.geteuid() == 0


@runtime_checkable
class ProcessSubject(Subject, Protocol):
    """A subject whose nodes run as plain processes (etcd, the rate limiter, Redis).

    It may also have ``colocated(nodes) -> dict[str, str]``: the nodes that run beside
    another, as they are deployed together (a sentinel on its Redis's host), each with that
    node. In netns mode they share its namespace and address, so a network fault on either
    strikes both."""

    def node_commands(self, lab: LabState, lab_dir: Path) -> dict[str, list[str]]:
        """Write each node's own config under ``lab_dir`` and return how to start it."""
        ...


class ProcessRuntime:
    """Root runs the plumbing (namespaces, nft, mounts, supervisord and its door); the nodes
    run as the lab user, started by launch scripts only root may change."""

    def __init__(self, lab_dir: LabDir) -> None:
        self.dir = lab_dir
        self.path = lab_dir.path

    def up(
        self, subject: Subject, nodes: int, mode: str | None, user: str, progress: Progress
    ) -> LabState:
        if not isinstance(subject, ProcessSubject):
            raise LabError(
                f"{subject.name} runs only in Docker here (it has no process runtime)",
                hint=f"`operator lab up {subject.name} --runtime docker`.",
            )
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
        colocated = getattr(subject, "colocated", None)
        host = {name: name for name in names} | (colocated(nodes) if colocated else {})
        hosts = [name for name in names if host[name] == name]
        state = LabState(
            name=self.dir.name,
            subject=subject.name,
            mode=mode,
            prefix=self.dir.prefix,
            user=user,
            nodes=[],
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._prepare_dirs(names, account, progress)
        _check_reachable(self.path, account)
        if mode == NETNS:
            progress(f"creating network namespaces ({state.prefix}-*)")
            subnet = network.pick_subnet(state.prefix)
            addresses = network.create(state.prefix, subnet, [*hosts, "ops"])
            state.subnet = str(subnet)
            state.host_address = addresses["host"]
            state.ops_address = addresses["ops"]
            state.ops_netns = f"{state.prefix}-ops"
            for member in [*hosts, "ops"]:
                network.fence(f"{state.prefix}-{member}", state.host_address)
            state.nodes = [
                LabNode(n, addresses[host[n]], dict(topology[n]), f"{state.prefix}-{host[n]}")
                for n in names
            ]
        else:
            state.nodes = [
                LabNode(n, "127.0.0.1", {port: free_port() for port in topology[n]}) for n in names
            ]
        self.dir.save(state)

        commands = subject.node_commands(state, self.path)
        for node in state.nodes:
            node.command = commands[node.name]
            self.write_launcher(state, node)
        if is_root():
            safefs.chown_tree(self.path / "conf", account)
        safefs.write_file(
            self.path / "supervisord.conf", render_supervisor(self.path, state.prefix, names)
        )
        progress("starting supervisord")
        state.supervisor_pid, state.supervisor_started = start_supervisor(
            self.path, mode == NETNS, CLEAN_ENV
        )
        self.dir.save(state)
        owner = (account.pw_uid, account.pw_gid) if is_root() else None
        state.door_pid, state.door_started = start_door(self.path, names, owner, CLEAN_ENV)
        self.dir.save(state)
        if mode == NETNS:
            for name in names:
                self._mount_data(state, name, account)
        progress(f"starting {len(names)} {subject.name} nodes")
        self.check_launchers(names)
        Supervisor(supervisor_socket(self.path)).call("supervisor.startAllProcesses", True)
        return state

    def control(self, state: LabState) -> Supervisor:
        return Supervisor(supervisor_socket(self.path))

    def running(self, state: LabState) -> bool:
        door = procs.still(state.door_pid, state.door_started)
        return self.supervisord(state) is not None and door is not None

    @staticmethod
    def supervisord(state: LabState) -> procs.Proc | None:
        """The lab's supervisord, if it still runs: the very process `lab up` started."""
        return procs.still(state.supervisor_pid, state.supervisor_started)

    def down(self, state: LabState | None, progress: Progress) -> list[str]:
        """Stop supervisord and whatever still names the lab dir (the door, and a crashed
        CLI's leftovers), remove the namespaces and the mounts: found by the lab's directory
        and prefix, not only by what lab.json says."""
        removed: list[str] = []
        supervisord = self.supervisord(state) if state else None
        if supervisord:
            progress("stopping supervisord and its nodes")
            with contextlib.suppress(LabError):
                Supervisor(supervisor_socket(self.path), timeout=10).shutdown()
            deadline = time.monotonic() + 15
            while supervisord.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            removed.append(f"supervisord {supervisord.pid}")
        leftovers = [p for p in map(procs.Proc.of, procs.referencing(str(self.path) + "/")) if p]
        if leftovers:
            progress(f"stopping {len(leftovers)} leftover processes")
            procs.terminate(leftovers)
            removed += [f"process {p.pid}" for p in leftovers]
        if is_root():
            removed += network.destroy(self.dir.prefix)
            removed += unmount_under(self.path)
        return removed

    # -- what root does for the lab, and how -------------------------------------------------

    def _prepare_dirs(
        self, names: list[str], account: pwd.struct_passwd, progress: Progress
    ) -> None:
        """The lab's directories, the lab user's ones made anew: whatever an earlier lab's
        user left in them (links to root's files, say) is removed unread and reported."""
        self.path.mkdir(parents=True, exist_ok=True)
        if is_root():
            unmount_under(self.path)
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

    def check_launchers(self, names: list[str]) -> None:
        for name in names:
            if problem := safefs.check_launcher(self.path / "run" / f"{name}.sh"):
                raise LabError(f"refusing to start {name}: {problem}")

    def _mount_data(self, state: LabState, node: str, account: pwd.struct_passwd) -> None:
        """Give a node's data dir its own tmpfs, inside the lab's private mount namespace."""
        path = self.path / "data" / node
        if path.is_symlink() or not path.is_dir():
            raise LabError(f"{path} is not a plain directory; not mounting on it")
        options = _tmpfs_options(TMPFS_SIZE, 0o700, account)
        self.in_mounts(state, "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))

    def in_mounts(self, state: LabState, *argv: str) -> str:
        """Run a command in the lab's mount namespace (supervisord's)."""
        return network.sh(*self._enter_mounts(state), *argv)

    def _enter_mounts(self, state: LabState) -> list[str]:
        """``nsenter`` into supervisord's mount namespace, only if it is still the process
        `lab up` started (root must not enter whatever namespace a reused PID has)."""
        proc = self.supervisord(state)
        if proc is None:
            raise LabError("the lab's supervisord is not running")
        return ["nsenter", "-t", str(proc.pid), "-m", "--"]

    def as_user(self, state: LabState, *argv: str, input: str | None = None) -> str:
        """Run a command as the lab user in the lab's mounts: how root reads or writes in the
        places the lab user can write, so that a planted link gets it nothing more."""
        prefix: list[str] = []
        if state.mode == NETNS:
            prefix = self._enter_mounts(state)
        if is_root():
            prefix += as_lab_user(pwd.getpwnam(state.user))
        return network.sh(*prefix, *argv, input=input)

    def write_launcher(
        self, state: LabState, node: LabNode, env: Mapping[str, str] | None = None
    ) -> None:
        """The script supervisord runs for a node: a clean environment, the node's network
        namespace, and the lab user. Root owns it, so the lab user cannot change what runs."""
        variables = {"PATH": CLEAN_PATH, "HOME": str(self.path / "tmp"), **(env or {})}
        prefix: list[str] = []
        if node.netns:
            prefix = ["nsenter", f"--net=/run/netns/{node.netns}", "--"]
        if is_root():
            prefix += as_lab_user(pwd.getpwnam(state.user))
        line = shlex.join(
            [*prefix, "env", "-i", *(f"{k}={v}" for k, v in variables.items()), *node.command]
        )
        script = self.path / "run" / f"{node.name}.sh"
        # 0700: what a fault changes in it (clock_skew's FAKETIME) would name the fault.
        text = f"#!/bin/sh\n# Written by `operator lab up`.\nexec {line}\n"
        safefs.write_file(script, text, mode=0o700)


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


def as_lab_user(account: pwd.struct_passwd) -> list[str]:
    """The ``setpriv`` prefix that runs a command as ``account``, with no other groups and no
    way to gain privileges (a setuid program runs as the lab user too)."""
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
            "--clear-groups", "--no-new-privs", "--"]  # fmt: skip


def _tmpfs_options(size: str, mode: int, account: pwd.struct_passwd) -> str:
    return (
        f"size={size},mode={mode:o},uid={account.pw_uid},gid={account.pw_gid},nosuid,nodev,noexec"
    )


def unmount_under(path: Path) -> list[str]:
    """Mounts under the lab dir in *our* namespace: conf/ and tmp/ (the nodes' data tmpfs
    live in the lab's own mount namespace and go with it)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith(str(path) + "/"):
            found.append(mount_point)
    for mount_point in sorted(found, reverse=True):
        network.sh("umount", "-l", mount_point, check=False)
    return [f"mount {m}" for m in found]
