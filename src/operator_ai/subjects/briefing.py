"""What subjects share in what they tell and show the agent: log tails, tool versions."""

from __future__ import annotations

import functools
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from operator_ai.lab.state import CLEAN_PATH

LOG_LINES = 6


def log_tails(logs: Sequence[Path], lines: int = LOG_LINES) -> str:
    """A shell command that prints, for each log, its last warnings and errors, then its
    last lines."""
    each = (
        'echo "== $f: the last warnings and errors"; '
        f"grep -aiE 'warn|error|panic|fatal' \"$f\" | tail -n {lines}; "
        f'echo "== $f: the last lines"; tail -n {lines} "$f"'
    )
    return f"for f in {' '.join(shlex.quote(str(p)) for p in logs)}; do {each}; done"


@functools.cache
def tool_version(*command: str) -> str:
    """The first line a tool prints about its version (read once per process), or that it
    is missing."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=10, env={"PATH": CLEAN_PATH}
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{command[0]}: version unknown ({exc})"
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else f"{command[0]}: version unknown"
