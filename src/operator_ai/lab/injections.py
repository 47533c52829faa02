"""Injecting and reverting faults, and the lab's record of them, `private/injections.json`.

The record is root's and out of the agent's sight, since it names the fault: it is the
answer key. Whether a fault can run is checked when it runs (privileges, the lab's mode,
the kernel's nft support, the binary), and a refusal says why.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operator_ai.core import CLUSTER, LOOPBACK, Cluster, Fault, Injection, LabHandle, Subject
from operator_ai.errors import FaultUnsupported, LabError, UsageError
from operator_ai.lab import procs
from operator_ai.lab.faults import GENERIC, helpers
from operator_ai.lab.state import locked, private_dir, write_json


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Injections:
    """The lab's record of faults, kept in one JSON file under a lock."""

    def __init__(self, lab_dir: Path) -> None:
        self.path = private_dir(lab_dir) / "injections.json"

    def all(self) -> list[Injection]:
        try:
            return [Injection(**entry) for entry in json.loads(self.path.read_text())]
        except FileNotFoundError:
            return []

    def active(self) -> list[Injection]:
        return [i for i in self.all() if i.active]

    def add(
        self, fault: str, target: str, params: dict[str, str], state: dict[str, Any]
    ) -> Injection:
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        with locked(self.path):
            entries = self.all()
            injection = Injection(
                id=max((e.id for e in entries), default=0) + 1,
                fault=fault,
                target=target,
                params=params,
                injected_at=state.pop("injected_at"),
                state=state,
            )
            write_json(self.path, [asdict(e) for e in [*entries, injection]])
        return injection

    def close(self, injection_id: int, note: str = "") -> Injection:
        with locked(self.path):
            entries = self.all()
            for entry in entries:
                if entry.id == injection_id and entry.active:
                    entry.reverted_at = now()
                    entry.note = note
            write_json(self.path, [asdict(e) for e in entries])
        return next(e for e in entries if e.id == injection_id)

    def close_all(self, note: str) -> None:
        """Mark every active injection over, killing the helpers it started."""
        for injection in self.active():
            procs.terminate(helpers(injection), grace=1.0)
            self.close(injection.id, note)


def catalogue(subject: Subject | None) -> dict[str, Fault]:
    """Every fault a lab of ``subject`` can take: the generic ones, then the subject's."""
    return {**GENERIC, **(subject.faults() if subject else {})}


def inject(lab: LabHandle, name: str, target: str | None, given: dict[str, str]) -> Injection:
    faults = catalogue(lab.subject)
    fault = faults.get(name)
    if fault is None:
        raise UsageError(f"no fault named {name!r}", hint=f"Faults: {', '.join(sorted(faults))}.")
    mode = lab.cluster.mode
    if mode not in fault.modes:
        raise FaultUnsupported(
            f"{name} cannot run in a {mode}-mode lab"
            + (" (it needs namespaces: run as root)" if mode == LOOPBACK else "")
        )
    unknown = set(given) - set(fault.params)
    if unknown:
        valid = ", ".join(fault.params) or "none"
        raise UsageError(f"{name} takes no parameter {', '.join(sorted(unknown))} (valid: {valid})")
    params = {k: default for k, (default, _) in fault.params.items()} | given
    resolved = resolve_target(lab, fault, target)
    record = Injections(lab.path)
    for active in record.active():
        if active.fault == name and active.target == resolved:
            raise LabError(
                f"{name} is already active on {resolved} (injection {active.id})",
                hint=f"`operator chaos revert {active.id}` first.",
            )
    injected_at = now()
    state = fault.inject(lab, resolved, params)
    return record.add(name, resolved, params, {**state, "injected_at": injected_at})


def resolve_target(lab: LabHandle, fault: Fault, target: str | None) -> str:
    """The node a fault's ``target`` names: a node, or the `leader` or a `follower` now."""
    if fault.target == CLUSTER:
        return target or CLUSTER
    if target is None:
        raise UsageError(f"{fault.name} needs --target NODE (or leader, follower)")
    if target in ("leader", "follower"):
        leader = lab.leader()
        if leader is None:
            raise LabError("the cluster has no leader right now; name the node instead")
        if target == "leader":
            return leader
        others = followers(lab.cluster, leader)
        if not others:
            raise LabError(f"the cluster has no node besides its leader {leader}")
        return others[0]
    return lab.cluster.node(target).name


def followers(cluster: Cluster, leader: str) -> list[str]:
    """The nodes of the leader's kind (the same ports: a replica, not a sentinel) but it."""
    kind = cluster.node(leader).ports.keys()
    return [n.name for n in cluster.nodes if n.name != leader and n.ports.keys() == kind]


def revert(lab: LabHandle, injection_id: int) -> Injection:
    record = Injections(lab.path)
    injection = next((i for i in record.all() if i.id == injection_id), None)
    if injection is None:
        raise LabError(f"no injection {injection_id}", hint="`operator chaos list` shows them.")
    if not injection.active:
        return injection
    fault = catalogue(lab.subject).get(injection.fault)
    if fault is not None:
        fault.revert(lab, injection)
    return record.close(injection_id, "reverted")
