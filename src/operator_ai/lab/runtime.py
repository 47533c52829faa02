"""A lab: one directory, the runtime that runs its nodes, and the `Cluster` it makes.

Two runtimes sit behind one seam (``Runtime``): processes under supervisord
(`lab/process.py`) and Docker Compose (`lab/docker.py`). ``Lab`` picks one, brings the
cluster up and down, and gives faults the narrow handle they need (``core.LabHandle``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from operator_ai import plugins
from operator_ai.core import DOCKER, PROCESS, Cluster, NodeControl, Observation, Subject
from operator_ai.errors import FaultUnsupported, LabError, SubjectUnreachable
from operator_ai.lab import docker, injections
from operator_ai.lab.docker import ComposeRuntime
from operator_ai.lab.injections import Injections
from operator_ai.lab.process import ProcessRuntime
from operator_ai.lab.state import LabDir, LabState, Progress, door_socket, quiet


class Runtime(Protocol):
    """What runs a lab's nodes. ``down`` works from the lab's directory and prefix, with or
    without a readable lab.json (``state`` None), so it also cleans up after a crash."""

    def up(
        self, subject: Subject, nodes: int, mode: str | None, user: str, progress: Progress
    ) -> LabState: ...

    def control(self, state: LabState) -> NodeControl: ...

    def running(self, state: LabState) -> bool: ...

    def down(self, state: LabState | None, progress: Progress) -> list[str]: ...


class Lab:
    """One lab directory and the running lab it describes."""

    def __init__(self, lab_dir: LabDir) -> None:
        self.dir = lab_dir
        self._state: LabState | None = None
        self._subject: Subject | None = None
        self._runtimes: dict[str, Runtime] = {
            PROCESS: ProcessRuntime(lab_dir),
            DOCKER: ComposeRuntime(lab_dir),
        }

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def state(self) -> LabState:
        if self._state is None:
            self._state = self.dir.load()
        return self._state

    @property
    def prefix(self) -> str:
        return self.dir.prefix

    @property
    def subject(self) -> Subject:
        if self._subject is None or self._subject.name != self.state.subject:
            self._subject = plugins.load_subject(self.state.subject)
        return self._subject

    @property
    def runtime(self) -> Runtime:
        return self._runtimes[DOCKER if self.state.mode == DOCKER else PROCESS]

    @property
    def control(self) -> NodeControl:
        return self.runtime.control(self.state)

    @property
    def cluster(self) -> Cluster:
        return self.state.cluster(self.path, self.control)

    def observe(self, timeout: float = 2.0) -> Observation:
        return self.subject.observe(self.cluster, timeout)

    def leader(self, timeout: float = 2.0) -> str | None:
        try:
            return self.subject.leader(self.observe(timeout))
        except SubjectUnreachable:
            return None

    def running(self) -> bool:
        return self.runtime.running(self.state)

    # -- what a fault may do beyond the cluster (core.LabHandle) ----------------------------

    def _process(self) -> ProcessRuntime:
        runtime = self.runtime
        if not isinstance(runtime, ProcessRuntime):
            raise FaultUnsupported(f"this needs a lab of processes, not a {self.state.mode} lab")
        return runtime

    def command(self, node: str) -> list[str]:
        return self.state.node(node).command

    def relaunch(self, node: str, env: Mapping[str, str] | None = None) -> None:
        self._process().write_launcher(self.state, self.state.node(node), env)
        self.control.restart(node)

    def in_mounts(self, *argv: str) -> str:
        return self._process().in_mounts(self.state, *argv)

    def as_user(self, *argv: str, input: str | None = None) -> str:
        return self._process().as_user(self.state, *argv, input=input)

    # -- up and down ------------------------------------------------------------------------

    def up(
        self,
        subject: Subject,
        nodes: int,
        mode: str | None,
        user: str,
        progress: Progress = quiet,
        runtime: str | None = None,
    ) -> LabState:
        """Start the lab, or return it as it is when it is already running.

        ``runtime`` is process or docker (None: docker for a docker ``mode``, else the
        subject's first); ``mode`` is netns or loopback for the process runtime (None: netns
        as root, loopback otherwise)."""
        runtime = runtime or (DOCKER if mode == DOCKER else None)
        runtime = runtime or (PROCESS if mode else subject.runtimes[0])
        if runtime not in subject.runtimes:
            how = "has no Docker lab" if runtime == DOCKER else "runs only in Docker here"
            raise LabError(
                f"{subject.name} {how}",
                hint=f"`operator lab up {subject.name} --runtime {subject.runtimes[0]}`.",
            )
        if runtime == DOCKER:
            docker.require_engine(subject.name)  # before a stale lab's record is cleaned up
        if self.dir.exists():
            if self.running():
                progress(f"lab {self.dir.name} is already up")
                return self.state
            progress("found a lab that is no longer running; cleaning it up first")
            self.down(progress)
        self._state = None
        try:
            self._state = self._runtimes[runtime].up(
                subject, nodes, None if mode == DOCKER else mode, user, progress
            )
            self._wait_ready(progress, timeout=180 if runtime == DOCKER else 30)
        except BaseException:
            progress("start failed; cleaning up")
            self.down(quiet)
            raise
        return self._state

    def heal(self, progress: Progress = quiet, timeout: float = 30.0) -> None:
        """Revert every active fault, start every node, and wait until nothing is broken."""
        for injection in Injections(self.path).active():
            progress(f"reverting {injection.fault} on {injection.target}")
            injections.revert(self, injection.id)
        runtime = self.runtime
        if isinstance(runtime, ProcessRuntime):
            runtime.check_launchers([n.name for n in self.state.nodes])
        for node in self.state.nodes:
            self.control.start(node.name)
        self._wait_ready(progress, timeout)

    def _wait_ready(self, progress: Progress, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                observation = self.observe(timeout=1.0)
                # A missing leader is a violation of its own where a subject has one.
                violations = self.subject.check(observation, [])
                if not violations and not observation.unobserved:
                    progress("lab is healthy")
                    return
                last = "; ".join(v.message for v in violations) or (
                    f"cannot see {', '.join(observation.unobserved)} yet"
                )
            except SubjectUnreachable as exc:
                last = str(exc)
            time.sleep(0.2)
        raise LabError(
            f"the lab did not become healthy within {timeout:.0f} s: {last}",
            hint=f"Read the node logs in {self.path / 'logs'}.",
        )

    def down(self, progress: Progress = quiet) -> list[str]:
        """Stop everything the lab started and remove its namespaces; idempotent.

        Every runtime cleans up what it finds of the lab, so this also cleans up after a CLI
        that crashed half-way, or a lab.json that cannot be read."""
        removed: list[str] = []
        state: LabState | None
        try:
            state = self.dir.load() if self.dir.exists() else None
        except LabError:
            state = None
        failed: LabError | None = None
        for runtime in (self._runtimes[DOCKER], self._runtimes[PROCESS]):
            try:
                removed += runtime.down(state, progress)
            except LabError as exc:  # clean up the rest all the same, then say so
                failed = exc
        Injections(self.path).close_all("lab down")
        if failed is not None:
            raise failed  # lab.json stays, so `lab down` can be run again
        (self.path / "lab.json").unlink(missing_ok=True)
        door_socket(self.path).unlink(missing_ok=True)
        self._state = None
        return removed

    def wipe(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
