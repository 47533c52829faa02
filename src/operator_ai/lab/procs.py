"""Processes by PID, read from /proc: trees for pause and kill, and the lab's leftovers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from operator_ai.errors import LabError


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields resume after the last ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first."""
    parents = _parents()
    found = [pid]
    for current in found:
        found.extend(child for child, parent in parents.items() if parent == current)
    return found


def signal_tree(pid: int, sig: signal.Signals) -> list[int]:
    pids = tree(pid)
    for each in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, sig)
    return pids


def spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Start a long-lived helper in its own session, detached from our terminal; its output
    goes to ``log``, and it starts in ``cwd`` (else ours). Returns its PID (no Popen object,
    which would warn when collected)."""
    if cwd is not None:  # posix_spawn cannot chdir; env does, then execs in the same PID
        argv = ["env", "-C", str(cwd), "--", *argv]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
        ]
        return os.posix_spawnp(
            argv[0], argv, dict(os.environ) if env is None else env,
            file_actions=actions, setsid=True,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} is not installed", hint="Run `make setup` as root.") from exc
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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


def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
