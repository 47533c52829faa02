"""A lab on disk: `$OPERATOR_HOME/labs/<name>/` and the `lab.json` that describes it.

The directory is the lab's only state, so any later process (the CLI, the monitor, the
agent's sandbox) finds the lab again, even after the process that started it is gone.

    labs/<name>/
      lab.json            what the runtime built: mode, prefix, nodes, addresses, PIDs
      supervisord.conf    one program per node, autorestart=false
      supervisor.sock     the agent's door to supervisord (`lab/door.py`), the lab user's
      run/<node>.sh       how supervisord starts a node (root-owned)
      conf/<node>.*       the node's own config, which the lab user may edit
      data/<node>/        the node's data dir (its own tmpfs in netns mode)
      tmp/                the nodes' HOME, the lab user's scratch space
      logs/<node>.log     the node's stdout and stderr
      load.json           the load generator's client-side stats
      private/            root's, 0700, and masked in the sandbox:
        supervisor.sock     supervisord's own socket, the whole API
        injections.json     every fault injected, with when it was reverted (the answer key)
        <fault>-<node>.log  what a fault's helper process printed

The lab user may write in ``conf/``, ``data/`` and ``tmp/`` (as root, size-capped tmpfs
mounts), and in nothing else; root never follows a path in those three (`lab/safefs.py`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from operator_ai.core import Cluster, Node, NodeControl, node_named
from operator_ai.errors import LabError

TMPFS_BYTES = 512 * 1024 * 1024
TMPFS_SIZE = f"{TMPFS_BYTES // (1024 * 1024)}m"
"""Each node's data tmpfs in netns mode (only what is used costs memory)."""
WRITABLE = {"conf": "16m", "tmp": "256m"}
"""The lab user's other writable directories, and the size of the tmpfs each gets as root."""
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
"""What the lab's own processes (supervisord, the door, fault helpers) inherit of ours:
nothing, so no API key or OPERATOR_* setting reaches them."""
Progress = Callable[[str], None]
"""Where the lab says what it is doing, one line at a time."""


def quiet(_: str) -> None:
    pass


PRIVATE = "private"
"""Root's directory inside the lab: supervisord's socket, the fault record, helper logs."""


def private_dir(lab_dir: Path) -> Path:
    return lab_dir / PRIVATE


def supervisor_socket(lab_dir: Path) -> Path:
    """supervisord's own socket, which only root (the lab's owner) may use."""
    return lab_dir / PRIVATE / "supervisor.sock"


def door_socket(lab_dir: Path) -> Path:
    """The socket of the agent's narrow door to supervisord, named in supervisord.conf."""
    return lab_dir / "supervisor.sock"


@dataclass
class LabNode(Node):
    """A node as the lab runs it: the cluster's view of it, and how it is started."""

    command: list[str] = field(default_factory=list)


@dataclass
class LabState:
    """What `lab.json` holds."""

    name: str
    subject: str
    mode: str
    prefix: str
    user: str
    nodes: list[LabNode]
    created_at: str
    subnet: str | None = None
    host_address: str | None = None
    ops_address: str | None = None
    ops_netns: str | None = None
    supervisor_pid: int | None = None
    supervisor_started: int | None = None
    door_pid: int | None = None
    door_started: int | None = None
    """Each with its start time (`lab/procs.py`): a PID alone may be another process's now."""
    extra: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> LabNode:
        return node_named(self.nodes, name, f"lab {self.name!r}")

    def cluster(self, workdir: Path, control: NodeControl) -> Cluster:
        """The cluster this lab runs, as the monitor, the agent and faults see it."""
        return Cluster(
            subject=self.subject,
            name=self.name,
            nodes=self.nodes,
            control=control,
            workdir=workdir,
            mode=self.mode,
            subnet=self.subnet,
            user=self.user,
            extra=self.extra,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        nodes = [LabNode(**n) for n in data.pop("nodes")]
        return cls(nodes=nodes, **data)


class LabDir:
    """Paths inside one lab's directory."""

    def __init__(self, home: Path, name: str) -> None:
        self.name = name
        self.path = home / "labs" / name

    @property
    def prefix(self) -> str:
        """A short name unique to this directory, for namespaces and interfaces.

        Linux caps interface names at 15 bytes, so it is 8 characters: `op` and 6 hex."""
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()
        return f"op{digest[:6]}"

    def __truediv__(self, part: str) -> Path:
        return self.path / part

    def exists(self) -> bool:
        return (self.path / "lab.json").exists()

    def load(self) -> LabState:
        try:
            data = json.loads((self.path / "lab.json").read_text())
        except FileNotFoundError:
            raise LabError(
                f"no lab named {self.name!r} is up",
                hint=f"Start it with `operator lab up {self.name}`.",
            ) from None
        except (OSError, ValueError) as exc:
            raise LabError(
                f"cannot read {self.path / 'lab.json'}: {exc}",
                hint="`operator lab down` removes a broken lab; then bring it up again.",
            ) from exc
        return LabState.from_json(data)

    def save(self, state: LabState) -> None:
        write_json(self.path / "lab.json", state.to_json())


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` so two CLIs do not edit it at once."""
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lab_names(home: Path) -> list[str]:
    root = home / "labs"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "lab.json").exists())


def find_lab(home: Path, name: str | None) -> LabDir:
    """The lab called ``name``, or the only lab there is when no name is given."""
    if name is not None:
        return LabDir(home, name)
    names = lab_names(home)
    if len(names) == 1:
        return LabDir(home, names[0])
    if not names:
        raise LabError("no lab is up", hint="Start one with `operator lab up etcd`.")
    raise LabError(f"several labs are up: {', '.join(names)}", hint="Name one with --lab NAME.")
