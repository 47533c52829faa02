"""Processes by PID, read from /proc: trees for pause and kill, and the lab's leftovers.

A PID alone does not name a process for long: once it exits, the kernel hands the number to
the next process that starts. So a process Operator starts now and signals later (a fault's
helper, a paused tree) is remembered as a :class:`Proc`, its PID *and* its start time
(field 22 of ``/proc/PID/stat``: set at fork, kept across exec), and only a process with
both is signalled. The start time counts clock ticks (10 ms), so a PID handed out again
within one tick would look the same: the kernel would have to run through every other PID
in that time first."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import NamedTuple

from operator_ai.errors import LabError

STATE, PPID, STARTTIME = 0, 1, 19
"""Fields of /proc/PID/stat (3, 4 and 22 in proc(5)), counted after the command's name."""


class Proc(NamedTuple):
    """One process, for as long as it lives: a reused PID has another start time."""

    pid: int
    started: int
    """Clock ticks after boot at which it started (field 22 of /proc/PID/stat)."""

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        """The process that has ``pid`` now; None if there is none."""
        started = _stat(pid, STARTTIME)
        return None if started is None else cls(pid, int(started))

    @classmethod
    def load(cls, value: object) -> Proc | None:
        """From its JSON form (a [pid, started] pair); None for anything else, such as a
        bare PID from an older record, which cannot be told from a reuse."""
        if isinstance(value, list | tuple) and len(value) == 2:
            return cls(int(value[0]), int(value[1]))
        return None

    def alive(self) -> bool:
        """Still this process, and not a zombie (a zombie child of ours is reaped; the start
        time is checked first, so no other child of ours that took the PID is)."""
        if _stat(self.pid, STARTTIME) != str(self.started):
            return False
        return alive(self.pid) and _stat(self.pid, STARTTIME) == str(self.started)

    def signal(self, sig: signal.Signals) -> bool:
        """Send ``sig`` if this is still the process; False if it is gone."""
        if not self.alive():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
            return True
        return False


def still(pid: int | None, started: int | None) -> Proc | None:
    """The process recorded as ``pid`` and ``started``, if it still runs; else None."""
    if pid is None or started is None:
        return None
    proc = Proc(pid, started)
    return proc if proc.alive() else None


def _stat(pid: int, field: int) -> str | None:
    """A field of /proc/PID/stat, counted from the state after the command's name, which
    may hold spaces and parentheses."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[field] if field < len(fields) else None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (parent := _stat(int(entry.name), PPID)) is not None:
            parents[int(entry.name)] = int(parent)
    return parents


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first."""
    parents = _parents()
    found = [pid]
    for current in found:
        found.extend(child for child, parent in parents.items() if parent == current)
    return found


def signal_tree(pid: int, sig: signal.Signals) -> list[Proc]:
    """Signal ``pid`` and its descendants; return them, each by PID and start time."""
    found = [p for p in map(Proc.of, tree(pid)) if p is not None]
    for proc in found:
        proc.signal(sig)
    return found


def spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Proc:
    """Start a long-lived helper in its own session, detached from our terminal; its output
    goes to ``log``, and it starts in ``cwd`` (else ours). Returns its PID and start time (no
    Popen object, which would warn when collected)."""
    if cwd is not None:  # posix_spawn cannot chdir; env does, then execs in the same PID
        argv = ["env", "-C", str(cwd), "--", *argv]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
        ]
        pid = os.posix_spawnp(
            argv[0], argv, dict(os.environ) if env is None else env,
            file_actions=actions, setsid=True,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} is not installed", hint="Run `make setup` as root.") from exc
    finally:
        os.close(fd)
    proc = Proc.of(pid)  # the start time is set at fork, so it is there already
    if proc is None:  # cannot happen to a child we have not reaped
        raise LabError(f"{argv[0]} (PID {pid}) vanished as it started")
    return proc


def alive(pid: int) -> bool:
    """Some process has ``pid`` (use :meth:`Proc.alive` to know it is the same one)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    return _stat(pid, STATE) not in (None, "Z")


def referencing(marker: str) -> list[int]:
    """PIDs whose command line mentions ``marker`` (a lab's directory), except our own."""
    me = os.getpid()
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit()
        and int(entry.name) != me
        and any(marker in part for part in cmdline(int(entry.name)))
    ]


def terminate(procs: list[Proc], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after ``grace`` seconds; a PID that
    now belongs to another process is left alone."""
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)
    for proc in procs:
        proc.signal(signal.SIGKILL)
