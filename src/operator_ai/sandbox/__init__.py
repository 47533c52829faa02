"""Where the agent's commands run: one seam, ``Sandbox.run(command, timeout)``.

``BwrapSandbox`` is the default: the lab user, the lab's ops namespace, a read-only root,
no secrets. A Docker lab's commands run in a throwaway container on its network instead
(``DockerSandbox``). ``HostSandbox`` runs commands straight on the host and is only built
when the user passes ``--unsafe-host``. Each is built by a ``SandboxFactory`` registered under
its name in the ``operator_ai.sandboxes`` entry-point group, where a third party's registers
too; ``sandbox_for`` picks among the built-ins, ``load_sandbox`` builds any by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from operator_ai import plugins
from operator_ai.core import DOCKER
from operator_ai.errors import SandboxError
from operator_ai.lab import Lab

BWRAP, CONTAINER, HOST = "bwrap", "docker", "host"
"""The built-in sandboxes' names, as they register in the entry-point group."""
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


class SandboxFactory(Protocol):
    """Builds a Sandbox for the agent's commands on ``lab`` that hides ``home`` (the operator's
    directory) and the files in ``hide``. Registered under its name in the
    ``operator_ai.sandboxes`` entry-point group. Raises SandboxError when it cannot run here."""

    def __call__(self, lab: Lab, home: Path, hide: Sequence[Path]) -> Sandbox: ...


def sandbox_for(
    lab: Lab, home: Path, *, hide: Sequence[Path] = (), unsafe_host: bool = False
) -> Sandbox:
    """The sandbox for the agent's commands on ``lab``: bubblewrap in the lab's ops namespace,
    a container on a Docker lab's network, or, only with ``unsafe_host``, the host itself.
    ``home`` is the operator's directory, which the sandbox hides, as it does the files in
    ``hide``. Each has a ``warning`` (None when isolation is complete)."""
    if unsafe_host:
        name = HOST
    elif lab.state.mode == DOCKER:
        name = CONTAINER
    else:
        name = BWRAP
    return load_sandbox(name, lab, home, hide=hide)


def load_sandbox(name: str, lab: Lab, home: Path, *, hide: Sequence[Path] = ()) -> Sandbox:
    """The sandbox the plugin registered as ``name`` builds for ``lab``."""
    factory = plugins.load(
        plugins.SANDBOXES,
        name,
        "sandbox",
        error=SandboxError,
        accepts=callable,
        shape="callable: (lab, home, hide) -> Sandbox",
    )
    return cast(SandboxFactory, factory)(lab, home, hide)
