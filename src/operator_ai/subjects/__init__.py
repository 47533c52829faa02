"""Subjects: the systems Operator watches, each a plugin found through one entry-point group.

A subject owns everything about one system: how the lab starts its nodes, how to observe
it, its invariants, its own faults, its load generator, and the briefing the agent reads.
Built-in subjects register through the same group, ``operator_ai.subjects``, that third
parties use, so adding one touches no core file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from operator_ai.errors import UnknownSubject
from operator_ai.store.records import Violation

if TYPE_CHECKING:
    from operator_ai.lab.faults import Fault
    from operator_ai.lab.state import LabState

ENTRY_POINT_GROUP = "operator_ai.subjects"


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


@runtime_checkable
class Subject(Protocol):
    name: str
    description: str
    invariants: Sequence[Invariant]
    default_nodes: int

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        """The lab's nodes for a size of ``nodes``: each name with its named ports (in
        loopback mode the lab picks free ports under the same names)."""
        ...

    def node_commands(self, lab: LabState, lab_dir: Path) -> dict[str, list[str]]:
        """Write each node's own config under ``lab_dir`` and return how to start it."""
        ...

    def observe(self, lab: LabState, lab_dir: Path, timeout: float) -> Observation:
        """Look at the system once. Raises SubjectUnreachable when no node answers."""
        ...

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        """Every invariant broken in ``observation``; ``history`` holds the ones before it."""
        ...

    def faults(self) -> Mapping[str, Fault]:
        """The subject's own faults, beside the lab's generic ones."""
        ...

    def leader(self, observation: Observation) -> str | None: ...

    def load(
        self, lab: LabState, lab_dir: Path, rate: float, duration: float | None,
        report: Callable[[dict[str, Any]], None],
    ) -> None:  # fmt: skip
        """Drive client load at ``rate`` ops/s, writing stats to ``lab_dir``/load.json."""
        ...

    def briefing(self, lab: LabState, lab_dir: Path) -> str:
        """What the agent is told about this system: topology, addresses, tools."""
        ...


def subject_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_subject(name: str) -> Subject:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            subject = ep.load()
            if not isinstance(subject, Subject):
                raise UnknownSubject(
                    f"the plugin {ep.value!r} registered as {name!r} is not a Subject",
                    hint="Its entry point must name an object with the Subject methods.",
                )
            return subject
    known = ", ".join(subject_names()) or "none"
    raise UnknownSubject(f"no subject named {name!r} (installed: {known})")


__all__ = [
    "ENTRY_POINT_GROUP",
    "Invariant",
    "Observation",
    "Subject",
    "load_subject",
    "subject_names",
]
