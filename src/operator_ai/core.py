"""The core nouns, declared once: what a cluster is, what is seen of it, what must hold, and
what breaks it. Everything else (the lab, the monitor, the agent, the subjects) is written
against these; this module imports nothing of ours but the errors.

    Subject      a kind of system (etcd, the rate limiter): how to look at it, what must
                 hold, its faults, its load, what the agent is told
    Cluster      one running system of a subject: its nodes and how to control them;
                 a lab makes one, and so can anything that knows the addresses
    NodeControl  status, start, stop, restart, signal of a cluster's nodes
    Observation  one look at a cluster; Invariant and Violation, what must hold and a breach
    Fault        a real injection with a revert, given a LabHandle; Injection, its record
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar, runtime_checkable

from operator_ai.errors import UsageError

# -- where a cluster runs ------------------------------------------------------------------

PROCESS = "process"
"""The process runtime: nodes under supervisord, in network namespaces or on loopback."""
DOCKER = "docker"
"""The Docker Compose runtime, and the mode of its labs: nodes are containers."""
RUNTIMES = (PROCESS, DOCKER)

NETNS = "netns"
"""Process runtime, as root: each node in its own network namespace."""
LOOPBACK = "loopback"
"""Process runtime, without root: distinct ports on 127.0.0.1, fewer faults."""
MODES = (NETNS, LOOPBACK)
"""The process runtime's modes, which the generic faults work on."""
EXTERNAL = "external"
"""The mode of a cluster Operator did not start."""


# -- a cluster -------------------------------------------------------------------------------


@dataclass
class Node:
    """One member of a cluster, as the monitor and the agent find it."""

    name: str
    address: str
    ports: dict[str, int]
    netns: str | None = None
    """The network namespace it runs in, when it has its own."""

    def url(self, port: str = "client") -> str:
        return f"http://{self.address}:{self.ports[port]}"


AnyNode = TypeVar("AnyNode", bound=Node)


def node_named(nodes: Iterable[AnyNode], name: str, where: str) -> AnyNode:
    """The node called ``name``; a usage error naming the others when there is none."""
    nodes = list(nodes)
    for node in nodes:
        if node.name == name:
            return node
    names = ", ".join(n.name for n in nodes)
    raise UsageError(f"{where} has no node {name!r}", hint=f"Its nodes: {names}.")


RUNNING = "RUNNING"
"""A node's state when its process runs. States are supervisord's words, which every control
uses: RUNNING, STARTING, STOPPED, EXITED, FATAL, PAUSED (a container), UNKNOWN..."""
PAUSED = "PAUSED"
UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class NodeStatus:
    name: str
    state: str
    pid: int | None = None


class NodeControl(Protocol):
    """How a cluster's nodes are started and stopped: supervisord in a lab, Docker for a
    Compose lab, whatever runs them elsewhere."""

    def status(self, node: str) -> NodeStatus: ...

    def statuses(self) -> list[NodeStatus]: ...

    def start(self, node: str) -> None:
        """Start a node that is not running (a no-op for one that is)."""
        ...

    def stop(self, node: str) -> None: ...

    def restart(self, node: str) -> None: ...

    def signal(self, node: str, sig: signal.Signals) -> int:
        """Send ``sig`` to the node's process; returns the PID that got it."""
        ...


class NoControl:
    """The control of a cluster Operator only watches: it knows no state and refuses every
    change, saying so."""

    def status(self, node: str) -> NodeStatus:
        return NodeStatus(node, UNKNOWN)

    def statuses(self) -> list[NodeStatus]:
        return []

    def _refuse(self, node: str) -> NoReturn:
        raise UsageError(
            f"Operator does not control {node}: this cluster is only watched",
            hint="Change the node with the tools that run it.",
        )

    def start(self, node: str) -> None:
        self._refuse(node)

    def stop(self, node: str) -> None:
        self._refuse(node)

    def restart(self, node: str) -> None:
        self._refuse(node)

    def signal(self, node: str, sig: signal.Signals) -> int:
        self._refuse(node)


@dataclass
class Cluster:
    """One running system: what the monitor observes, the agent is briefed on, and faults
    break. ``workdir`` is Operator's directory for it: the load's stats (`load.json`), and
    in a lab the nodes' configs, data and logs."""

    subject: str
    name: str
    nodes: Sequence[Node]
    control: NodeControl
    workdir: Path
    mode: str = EXTERNAL
    subnet: str | None = None
    user: str | None = None
    """The account the nodes run as, when Operator knows it."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What a subject keeps about the cluster (TiKV's Prometheus address, say)."""

    def node(self, name: str) -> Node:
        return node_named(self.nodes, name, self.name)

    def pid(self, node: str) -> int | None:
        status = self.control.status(node)
        return status.pid if status.state == RUNNING and status.pid else None


# -- what is seen, and what must hold ----------------------------------------------------------


@dataclass(frozen=True)
class Invariant:
    """A property the system must keep. A breach opens a ticket once it has lasted
    ``grace_seconds``, so blips during normal operation (an election) open nothing."""

    name: str
    description: str
    severity: str = "warning"
    grace_seconds: float = 0.0


@dataclass(frozen=True)
class Observation:
    """One successful look at a system. ``nodes`` maps each node to what was seen of it;
    ``cluster`` holds what is seen once (leader, alarms, workload). ``unobserved`` names the
    invariants this look could not evaluate (a metrics source was down), each as
    ``invariant`` (every target) or ``invariant:target``: like a failed observation, it
    clears none of their tickets."""

    subject: str
    at: datetime
    nodes: dict[str, dict[str, Any]]
    cluster: dict[str, Any] = field(default_factory=dict)
    unobserved: tuple[str, ...] = ()

    def saw(self, invariant: str, target: str) -> bool:
        """Whether this look could evaluate ``invariant`` on ``target``."""
        return invariant not in self.unobserved and f"{invariant}:{target}" not in self.unobserved


@dataclass(frozen=True, slots=True)
class Violation:
    """One invariant seen broken, as the monitor reports it."""

    subject: str
    invariant: str
    target: str
    message: str
    severity: str = "warning"
    evidence: dict[str, Any] = field(default_factory=dict)
    first_seen_at: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.subject}:{self.invariant}:{self.target}"


# -- faults --------------------------------------------------------------------------------

NODE = "node"
CLUSTER = "cluster"


@dataclass
class Injection:
    """A fault as the lab recorded it: what, where, when, and what its revert needs."""

    id: int
    fault: str
    target: str
    params: dict[str, str]
    injected_at: str
    reverted_at: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def active(self) -> bool:
        return self.reverted_at is None


class LabHandle(Protocol):
    """What a fault gets of the lab it breaks: the cluster, and the few powers of a lab
    that a fault needs beyond it. Commands run as root unless they say otherwise."""

    @property
    def cluster(self) -> Cluster: ...

    @property
    def subject(self) -> Subject: ...

    @property
    def path(self) -> Path:
        """The lab directory; its ``private/`` is root's and hidden from the agent."""
        ...

    @property
    def prefix(self) -> str:
        """The lab's unique prefix: its namespaces, containers and compose project."""
        ...

    def command(self, node: str) -> list[str]:
        """How the node is started."""
        ...

    def relaunch(self, node: str, env: Mapping[str, str] | None = None) -> None:
        """Restart the node with ``env`` added to its environment (None: as it was)."""
        ...

    def in_mounts(self, *argv: str) -> str:
        """Run a command in the lab's mount namespace, where the data tmpfs are."""
        ...

    def as_user(self, *argv: str, input: str | None = None) -> str:
        """Run a command as the lab user: how root touches what the lab user may write."""
        ...

    def observe(self, timeout: float = 2.0) -> Observation: ...

    def leader(self, timeout: float = 2.0) -> str | None: ...


class Fault(Protocol):
    name: str
    description: str
    params: Mapping[str, tuple[str, str]]
    """Each parameter's default and meaning."""
    modes: tuple[str, ...]
    target: str
    """`node` (pass --target NODE, `leader` or `follower`) or `cluster`."""

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        """Break something; return what ``revert`` needs to undo it."""
        ...

    def revert(self, lab: LabHandle, injection: Injection) -> None: ...


# -- a subject -----------------------------------------------------------------------------

Report = Callable[[dict[str, Any]], None]
"""Where a load generator sends its stats, once a second."""


class Stopping(Protocol):
    """What tells a long task to end (a ``threading.Event``)."""

    def is_set(self) -> bool: ...


@runtime_checkable
class Subject(Protocol):
    """A kind of system Operator can watch. How a lab starts its nodes is the runtime's
    concern: a subject that runs as processes is also a ``lab.process.ProcessSubject``, one
    that runs in Docker a ``lab.docker.ComposeSubject``; ``runtimes`` names which, the
    preferred first."""

    name: str
    description: str
    invariants: Sequence[Invariant]
    default_nodes: int
    runtimes: tuple[str, ...]

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        """The nodes of a cluster of size ``nodes``: each name with its named ports."""
        ...

    def observe(self, cluster: Cluster, timeout: float) -> Observation:
        """Look at the system once. Raises SubjectUnreachable when no node answers."""
        ...

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        """Every invariant broken in ``observation``; ``history`` holds the ones before it."""
        ...

    def leader(self, observation: Observation) -> str | None: ...

    def faults(self) -> Mapping[str, Fault]:
        """The subject's own faults, beside the lab's generic ones."""
        ...

    def load(
        self,
        cluster: Cluster,
        rate: float,
        duration: float | None,
        report: Report,
        stop: Stopping,
    ) -> None:
        """Drive client load at ``rate`` ops/s until ``duration`` passes or ``stop`` is set,
        writing stats to the cluster's workdir (`load.json`)."""
        ...

    def briefing(self, cluster: Cluster) -> str:
        """What the agent is told about this system: topology, addresses, tools."""
        ...

    def diagnostics(self, cluster: Cluster, targets: Sequence[str]) -> list[str]:
        """The read-only commands an engineer runs first, for tickets on ``targets`` (node
        names, or names such as ``cluster`` for the whole system). The platform runs them in
        the agent's sandbox before the first turn, each within a few seconds."""
        ...
