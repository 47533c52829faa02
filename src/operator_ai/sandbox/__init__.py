"""Where the agent's commands run: one seam, ``Sandbox.run(command, timeout)``.

``BwrapSandbox`` is the default: the lab user, the lab's ops namespace, a read-only root,
no secrets. A Docker lab's commands run in a throwaway container on its network instead
(``DockerSandbox``). ``HostSandbox`` runs commands straight on the host and is only built
when the user passes ``--unsafe-host``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from operator_ai.lab.state import DOCKER

if TYPE_CHECKING:
    from operator_ai.lab import Lab

DEFAULT_TIMEOUT = 120.0
OUTPUT_CAP = 1024 * 1024  # bytes kept per stream: the head and the tail, half each


@dataclass(frozen=True, slots=True)
class CommandResult:
    exit_code: int  # 124 after a timeout; 128 + N when killed by signal N
    stdout: str
    stderr: str
    duration_ms: int
    truncated: bool = False  # some output was dropped (dropped_bytes says how much)
    timed_out: bool = False
    dropped_bytes: int = 0


class Sandbox(Protocol):
    name: str
    warning: str | None  # how isolation is weaker than the default; None when it is not

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> CommandResult: ...


def sandbox_for(
    lab: Lab, home: Path, *, hide: Sequence[Path] = (), unsafe_host: bool = False
) -> Sandbox:
    """The sandbox for the agent's commands on ``lab``: bubblewrap in the lab's ops namespace,
    or, only with ``unsafe_host``, the host itself. ``home`` is the operator's directory,
    which the sandbox hides, as it does the files in ``hide``. Both have a ``warning`` (None
    when isolation is complete)."""
    if unsafe_host:
        from operator_ai.sandbox.host import HostSandbox

        return HostSandbox(cwd=lab.path)
    if lab.state.mode == DOCKER:
        from operator_ai.sandbox.docker import DockerSandbox

        return DockerSandbox(lab, lab.state.extra["ops_image"])
    from operator_ai.sandbox.bwrap import BwrapSandbox

    return BwrapSandbox(lab, home, hide=hide)
