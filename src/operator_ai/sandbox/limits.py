"""What one sandboxed command may use, and how that is enforced.

Processes. RLIMIT_NPROC counts every process *and thread* of a uid, and the lab's etcd
nodes run as the lab user with dozens of threads each, more under load; set outside the
sandbox, a limit is either below what the nodes already use, so the sandbox cannot start
`etcdctl`, or so far above it that a fork bomb still hurts. Since Linux 5.14, though, the
count is kept per user namespace, and bwrap makes one for each command: set *inside* the
sandbox, RLIMIT_NPROC counts that command's own tasks and nothing else. So the first thing
the sandbox runs sets it, with the other rlimits, before the command can. (On an older
kernel the same limit also counts the nodes' threads, so a command gets fewer tasks.)

As root, each command also gets a cgroup of its own, created under our own cgroup in each
hierarchy (so the limits of a container or systemd unit around us still hold): pids.max
repeats the task limit where the kernel enforces it best, the memory controller holds the
whole command, its private /tmp included, to ``Limits.memory``, and at a timeout every task
in it is killed at once. Without root, or where no pids
controller is delegated to our cgroup (cgroup v2 under systemd), the rlimits stand alone.

Memory per process: RLIMIT_AS, generous because Go tools such as etcdctl reserve about a GiB
of address space at start. Files: RLIMIT_FSIZE caps any one file a command writes. No core
dumps.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB
PREFIX = "operator-sandbox-"
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Limits:
    tasks: int = 512
    """Processes and threads of one command (RLIMIT_NPROC in its user namespace, pids.max)."""
    memory: int = 2 * GiB
    """All the memory of one command, /tmp included, where a memory cgroup is usable."""
    address_space: int = 4 * GiB
    """RLIMIT_AS of each process."""
    file_size: int = 256 * MiB
    """RLIMIT_FSIZE: the largest file a command may write (an etcd snapshot fits)."""
    tmp_size: int = 512 * MiB
    """The private /tmp, a tmpfs."""
    shm_size: int = 64 * MiB
    """The private /dev/shm, a tmpfs."""

    def ulimit(self) -> str:
        """The bash ``ulimit`` that sets these rlimits, soft and hard; none above the hard
        limit we have ourselves, which an unprivileged process could not set."""
        values = [
            ("-c", resource.RLIMIT_CORE, 0, 1),
            ("-u", resource.RLIMIT_NPROC, self.tasks, 1),
            ("-v", resource.RLIMIT_AS, self.address_space, 1024),
            ("-f", resource.RLIMIT_FSIZE, self.file_size, 1024),
        ]
        options = []
        for flag, which, value, unit in values:
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            options.append(f"{flag} {value // unit}")
        return "ulimit " + " ".join(options)


@dataclass(frozen=True, slots=True)
class _Hierarchy:
    parent: Path
    """Our own cgroup in this hierarchy: per-command cgroups go under it."""
    v2: bool
    controllers: frozenset[str]
    """Those of pids and memory this hierarchy limits for us."""


@functools.cache
def _hierarchies() -> tuple[_Hierarchy, ...]:
    """The cgroup hierarchies where we can limit pids or memory; found once per process,
    which is also when cgroups left behind by dead processes are removed."""
    own: dict[str, str] = {}  # controller ("" for v2) -> our cgroup's path
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            own[name] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, super_fields = left.split(), right.split()
        if len(fields) < 5 or len(super_fields) < 3:
            continue
        root, mount_point, fstype = fields[3], Path(fields[4]), super_fields[0]
        if fstype == "cgroup2" and "" in own:
            parent = _inside(mount_point, root, own[""])
            try:
                enabled = set((parent / "cgroup.subtree_control").read_text().split())
            except OSError:
                continue
            if "pids" in enabled:
                found.append(_Hierarchy(parent, True, frozenset(enabled & {"pids", "memory"})))
        elif fstype == "cgroup":
            limited = {"pids", "memory"} & set(super_fields[2].split(",")) & own.keys()
            if limited:
                parent = _inside(mount_point, root, own[min(limited)])
                found.append(_Hierarchy(parent, False, frozenset(limited)))
    if not any("pids" in h.controllers for h in found):
        return ()
    for hierarchy in found:
        _remove_stale(hierarchy.parent)
    return tuple(found)


def _inside(mount_point: Path, root: str, path: str) -> Path:
    relative = path[len(root) :] if root != "/" and path.startswith(root) else path
    return mount_point / relative.lstrip("/")


def _remove_stale(parent: Path) -> None:
    with contextlib.suppress(OSError):
        for child in parent.glob(f"{PREFIX}*"):
            pid = child.name.removeprefix(PREFIX).split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    child.rmdir()


class CommandCgroup:
    """One command's cgroup, in each hierarchy that limits its tasks or its memory."""

    def __init__(self, dirs: list[tuple[_Hierarchy, Path]]) -> None:
        self._dirs = dirs

    @classmethod
    def create(cls, limits: Limits) -> CommandCgroup | None:
        """A fresh cgroup with ``limits`` applied, or None when cgroups are not usable here
        (then the rlimits stand alone)."""
        if os.geteuid() != 0:
            return None
        try:
            hierarchies = _hierarchies()
        except OSError:
            return None
        name = f"{PREFIX}{os.getpid()}-{next(_ids)}"
        cgroup = cls([])
        try:
            for hierarchy in hierarchies:
                path = hierarchy.parent / name
                path.mkdir()
                cgroup._dirs.append((hierarchy, path))
                for setting, value in _settings(hierarchy, limits):
                    (path / setting).write_text(value)
        except OSError:
            cgroup.remove()
            return None
        return cgroup if cgroup._dirs else None

    @property
    def procs_files(self) -> list[Path]:
        """Where a process writes its PID to join the cgroup (one file per hierarchy)."""
        return [path / "cgroup.procs" for _, path in self._dirs]

    def kill(self) -> None:
        """SIGKILL every task in the cgroup; only while the command is still running."""
        for hierarchy, path in self._dirs:
            if hierarchy.v2 and (path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
                continue
            try:
                pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            except OSError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Remove the cgroup once the command is over. It stays busy for a millisecond or
        two while the kernel finishes releasing the dead; one that will not go (a task stuck
        in the kernel) stays behind, and the next process that looks removes it. It kills
        nothing: a PID it lists may already have been reaped, and reused."""
        for _, path in reversed(self._dirs):
            deadline = time.monotonic() + 5
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.001)
        self._dirs.clear()


def _settings(hierarchy: _Hierarchy, limits: Limits) -> list[tuple[str, str]]:
    settings = []
    if "pids" in hierarchy.controllers:
        settings.append(("pids.max", str(limits.tasks)))
    if "memory" in hierarchy.controllers:
        name = "memory.max" if hierarchy.v2 else "memory.limit_in_bytes"
        settings.append((name, str(limits.memory)))
    return settings
