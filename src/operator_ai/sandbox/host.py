"""UNSAFE: commands run straight on the host, as the user running Operator.

No isolation at all: a command can read the operator's API keys and database, reach any
address, and change anything this user may change. Only ``--unsafe-host`` builds it; it
exists for machines without bubblewrap and for tests of the agent loop.

What it keeps from the real sandbox: a clean environment (no API keys passed down), the
timeout, capped output, and no survivors: each command runs in a process group of its own,
which is SIGKILLed when the command exits or times out. A process that starts its own
session (``setsid``, a daemonizing server) escapes that, which the bwrap sandbox prevents.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from operator_ai.lab import Lab
from operator_ai.lab.state import CLEAN_PATH
from operator_ai.sandbox import DEFAULT_TIMEOUT, HOST, CommandResult
from operator_ai.sandbox.capture import run_captured, unrunnable


class HostSandbox:
    """UNSAFE: ``bash -c COMMAND`` on the host as this user, with a clean environment."""

    name = HOST
    warning: str | None = "--unsafe-host: commands run on this host as you, with no sandbox"

    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd
        home = pwd.getpwuid(os.geteuid()).pw_dir
        self._env = {"PATH": CLEAN_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb"}

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        if rejected := unrunnable(command):
            return rejected
        return run_captured(
            ["bash", "-c", command], env=self._env, timeout=timeout, stop=_kill_group, cwd=self.cwd
        ).result


def sandbox(lab: Lab, home: Path, hide: Sequence[Path]) -> HostSandbox:
    """The ``host`` SandboxFactory, in the lab's directory. It hides nothing: that is what
    makes it unsafe."""
    return HostSandbox(cwd=lab.path)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The group leader is not reaped yet when this runs, so its id cannot have been reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
