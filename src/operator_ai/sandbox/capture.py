"""Running one argv with a deadline and capped output: the part every sandbox shares.

Each stream keeps its first and its last ``cap / 2`` bytes while it is read, and counts what
falls in between, so a command that prints 100 MB costs about ``cap`` of memory. The text
comes back decoded with ``errors="replace"``, with a marker where bytes were dropped.

Ending the command is the caller's business, through ``stop``: it is called once, when the
deadline passes or as soon as the command has exited (before it is reaped, so a process
group id is still safe to signal), and must kill whatever the command left behind. After
that, output still buffered in the pipes is read for at most ``DRAIN_GRACE`` seconds, so a
process that escaped ``stop`` and holds a pipe open cannot make ``run`` hang.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from operator_ai.errors import SandboxError
from operator_ai.sandbox import OUTPUT_CAP, CommandResult

CHUNK = 64 * 1024
DRAIN_GRACE = 1.0
"""Seconds to keep reading pipes once the command is gone."""
KILL_GRACE = 5.0
"""Seconds to wait for the command to die after ``stop`` at the deadline."""
TIMEOUT_EXIT = 124

Stop = Callable[[subprocess.Popen[bytes]], None]


class CappedStream:
    """The head and the tail of a byte stream, and how many bytes fell in between."""

    def __init__(self, cap: int = OUTPUT_CAP) -> None:
        self._head_cap = cap // 2
        self._tail_cap = cap - self._head_cap
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data and self._tail_cap:
            self._tail += data
            # Trim in batches: each trim moves tail_cap bytes, once per tail_cap bytes read.
            if len(self._tail) > 2 * self._tail_cap:
                del self._tail[: -self._tail_cap]

    def _kept_tail(self) -> bytes:
        return bytes(self._tail[-self._tail_cap :]) if self._tail_cap else b""

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._kept_tail())

    def text(self) -> str:
        head = self._head.decode(errors="replace")
        tail = self._kept_tail().decode(errors="replace")
        if not self.dropped:
            return head + tail
        return f"{head}\n[... {self.dropped:,} bytes dropped ...]\n{tail}"


def unrunnable(command: str) -> CommandResult | None:
    """The result for a command no shell can be given (a NUL byte in it), else None: the
    model's mistake, to be reported like a failed command, not a broken sandbox."""
    if "\0" not in command:
        return None
    return CommandResult(2, "", "operator: the command contains a NUL byte\n", 0)


@dataclass(frozen=True, slots=True)
class Finished:
    result: CommandResult
    ready: bool
    """Whether a byte arrived on the ``ready`` pipe (always False without one)."""


def run_captured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    stop: Stop,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
    ready: int | None = None,
    cap: int = OUTPUT_CAP,
) -> Finished:
    """Run ``argv`` with stdin from /dev/null, in a session of its own, until it exits or
    ``timeout`` seconds pass; then ``stop`` it. Exit code 124 means it timed out, 128 + N
    that signal N killed it.

    ``pass_fds`` are handed to the child and closed here once it has them; ``ready`` is the
    read end of a pipe the child writes a byte to when it is set up (closed here too)."""
    out, err = CappedStream(cap), CappedStream(cap)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=dict(env), cwd=cwd, pass_fds=tuple(pass_fds),
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        if ready is not None:
            os.close(ready)
        raise SandboxError(f"cannot start {argv[0]}: {exc}") from exc
    finally:
        for fd in pass_fds:
            os.close(fd)

    got_ready = False
    timed_out = False
    with contextlib.ExitStack() as cleanup:
        assert proc.stdout is not None and proc.stderr is not None
        cleanup.callback(proc.stdout.close)
        cleanup.callback(proc.stderr.close)
        selector = cleanup.enter_context(selectors.DefaultSelector())
        sinks: dict[int, Callable[[bytes], None]] = {
            proc.stdout.fileno(): out.feed,
            proc.stderr.fileno(): err.feed,
        }
        if ready is not None:
            cleanup.callback(os.close, ready)
            sinks[ready] = lambda data: None
        for fd in sinks:
            selector.register(fd, selectors.EVENT_READ)
        pidfd = os.pidfd_open(proc.pid)
        cleanup.callback(os.close, pidfd)
        selector.register(pidfd, selectors.EVENT_READ)

        stopped = False
        exited = False
        give_up_at = started + timeout
        try:
            while sinks or not exited:
                now = time.monotonic()
                if now >= give_up_at:
                    if exited or timed_out:
                        break  # pipes held by something ``stop`` missed, or a process in D state
                    timed_out = stopped = True
                    stop(proc)
                    give_up_at = now + KILL_GRACE
                    continue
                for key, _ in selector.select(give_up_at - now):
                    if key.fd == pidfd:
                        selector.unregister(pidfd)
                        if not stopped:
                            stopped = True
                            stop(proc)
                        proc.wait()
                        exited = True
                        give_up_at = time.monotonic() + DRAIN_GRACE
                        continue
                    data = os.read(key.fd, CHUNK)
                    if key.fd == ready:
                        got_ready = got_ready or bool(data)
                        if data:
                            continue
                    if data:
                        sinks[key.fd](data)
                    else:
                        selector.unregister(key.fd)
                        del sinks[key.fd]
        finally:
            if not stopped:  # an exception (KeyboardInterrupt...) left the loop early
                stop(proc)
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=KILL_GRACE)

    duration_ms = int((time.monotonic() - started) * 1000)
    code = proc.returncode if proc.returncode is not None else -9
    exit_code = TIMEOUT_EXIT if timed_out else (128 - code if code < 0 else code)
    dropped = out.dropped + err.dropped
    result = CommandResult(
        exit_code=exit_code,
        stdout=out.text(),
        stderr=err.text(),
        duration_ms=duration_ms,
        truncated=dropped > 0,
        timed_out=timed_out,
        dropped_bytes=dropped,
    )
    return Finished(result, got_ready)
