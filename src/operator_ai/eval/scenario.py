"""Scenarios: incidents as data. One YAML file says which subject and lab size, the load, the
faults and where they strike, the tickets the monitor should open, what counts as success,
and the time limit. Each subject ships a library in its package's `scenarios/` folder.

A scenario is checked whole when it is loaded, against the subject it names: an unknown
fault, parameter, target or invariant is an error that names the file and the key, before
any lab starts.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from operator_ai import plugins
from operator_ai.core import NODE, Subject
from operator_ai.errors import ScenarioError, SubjectError
from operator_ai.lab.faults import ROOT
from operator_ai.lab.injections import catalogue
from operator_ai.lab.load import DEFAULT_RATE
from operator_ai.monitor import UNOBSERVABLE

ALIASES = ("leader", "follower")
"""Targets that name a role, resolved to one node per trial (the same for every fault)."""
SCRIPT = "script"
SUFFIXES = (".yaml", ".yml")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Load(Strict):
    rate: float = Field(default=DEFAULT_RATE, gt=0)
    """Client operations a second, for the whole trial."""


class Step(Strict):
    """One fault of a scenario, injected in order."""

    fault: str
    target: str | None = None
    """A node's name, or an alias (leader, follower); none for a cluster-wide fault."""
    params: dict[str, str | int | float] = Field(default_factory=dict)
    duration: float | None = Field(default=None, gt=0)
    """Seconds after which the fault reverts by itself."""
    run: str | None = None
    revert: str | None = None
    user: Literal["lab", "root"] | None = None
    """The script fault's script, its revert, and who runs it (lab: the lab user)."""

    def fault_params(self) -> dict[str, str]:
        script = {"run": self.run, "revert": self.revert, "user": self.user}
        return {k: str(v) for k, v in {**self.params, **script}.items() if v is not None}


class Expect(Strict):
    tickets: list[str] = Field(default_factory=list)
    """Invariants whose tickets the faults should open; none for a no-op scenario."""
    within: float = Field(default=30.0, gt=0)
    """Seconds from the fault for the first of them to open (a no-op scenario watches this
    long for tickets that should not open)."""
    escalation: bool = False
    """The right response is to escalate (the fix needs what the agent may not do): an
    escalation, with no claimed fix and no regression, is a success."""


class Success(Strict):
    settle: float = Field(default=30.0, ge=0)
    """Seconds after the last ticket's verified resolution during which every invariant must
    hold and no ticket may open."""
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    """The workload's error rate over the settle window must stay at or under this."""


class Spec(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=80)
    subject: str
    description: str = ""
    fix: str = ""
    """The class of fix it expects: restart, config repair, member replace..."""
    nodes: int | None = Field(default=None, ge=1, le=9)
    load: Load = Load()
    faults: list[Step] = Field(default_factory=list)
    expect: Expect = Expect()
    success: Success = Success()
    time_limit: float = Field(default=600.0, gt=0)


class Scenario(Spec):
    """A scenario as loaded: its file and that file's SHA-256 besides what the file says."""

    path: Path
    sha256: str

    @property
    def noop(self) -> bool:
        return not self.faults

    @property
    def needs_fresh_lab(self) -> bool:
        """A script run as root follows paths the lab user can write: it runs only on a lab
        reset for it, where no agent has been."""
        return any(step.fault == SCRIPT and step.user == ROOT for step in self.faults)

    def size(self, subject: Subject) -> int:
        return self.nodes or subject.default_nodes


def read(path: Path, what: str) -> tuple[bytes, Any]:
    """A YAML file's bytes and what they say; a ScenarioError naming ``what`` and the file
    when it cannot be read or parsed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        return raw, yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{what} {path} is not valid YAML: {exc}") from exc


def load(path: Path) -> Scenario:
    """The scenario in ``path``, checked against its subject."""
    raw, data = read(path, "scenario")
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {path}: expected a mapping of keys, got {_kind(data)}")
    for key in ("path", "sha256"):
        if key in data:
            raise ScenarioError(f"scenario {path}: unknown key {key!r}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"scenario {path}: {problems(exc)}") from exc
    scenario = Scenario(**spec.model_dump(), path=path, sha256=hashlib.sha256(raw).hexdigest())
    _check(scenario)
    return scenario


def problems(exc: ValidationError) -> str:
    """The first few things pydantic found wrong, each with where."""
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "the file"
        problems.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _check(scenario: Scenario) -> None:
    where = f"scenario {scenario.path}"
    try:
        subject = plugins.load_subject(scenario.subject)
    except SubjectError as exc:
        raise ScenarioError(f"{where}: {exc}", hint=exc.hint) from exc
    nodes = set(subject.topology(scenario.size(subject)))
    faults = catalogue(subject)
    for n, step in enumerate(scenario.faults):
        at = f"{where}, faults[{n}]"
        fault = faults.get(step.fault)
        if fault is None:
            names = ", ".join(sorted(faults))
            raise ScenarioError(f"{at}: no fault named {step.fault!r}", hint=f"Faults: {names}.")
        if step.fault != SCRIPT and (step.run or step.revert or step.user):
            raise ScenarioError(f"{at}: run, revert and user belong to the script fault only")
        if step.fault == SCRIPT and not (step.run or "").strip():
            raise ScenarioError(f"{at}: the script fault needs a `run` script")
        if step.fault == SCRIPT and step.user == ROOT and step.revert:
            why = "root never runs in a lab an agent has worked in, so the lab is reset instead"
            raise ScenarioError(f"{at}: a root script takes no revert: {why}")
        if step.fault == SCRIPT and step.duration and not step.revert:
            raise ScenarioError(f"{at}: a script with a duration needs a revert script")
        unknown = set(step.fault_params()) - set(fault.params)
        if unknown:
            valid = ", ".join(fault.params) or "none"
            raise ScenarioError(f"{at}: {step.fault} takes no parameter "
                                f"{', '.join(sorted(unknown))} (valid: {valid})")  # fmt: skip
        if fault.target == NODE and step.target is None:
            raise ScenarioError(f"{at}: {step.fault} needs a target (a node, or leader, follower)")
        targets = [*ALIASES, *sorted(nodes)]
        if fault.target == NODE and step.target not in targets:
            hint = f"Targets: {', '.join(targets)}."
            raise ScenarioError(f"{at}: no target {step.target!r}", hint=hint)
    invariants = {i.name for i in subject.invariants} | {UNOBSERVABLE.name}
    for name in scenario.expect.tickets:
        if name not in invariants:
            hint = f"Its invariants: {', '.join(sorted(invariants))}."
            problem = f"{subject.name} has no invariant {name!r}"
            raise ScenarioError(f"{where}, expect.tickets: {problem}", hint=hint)
    if scenario.faults and not scenario.expect.tickets:
        raise ScenarioError(f"{where}: expect.tickets names none; only a no-op scenario (no "
                            "faults) expects no ticket")  # fmt: skip
    if scenario.noop and scenario.expect.tickets:
        raise ScenarioError(f"{where}: a scenario without faults cannot expect tickets")
    if scenario.expect.within > scenario.time_limit:
        raise ScenarioError(f"{where}: expect.within ({scenario.expect.within:g} s) is past "
                            f"the time_limit ({scenario.time_limit:g} s)")  # fmt: skip
    if scenario.name != scenario.path.stem:
        raise ScenarioError(f"{where}: its name is {scenario.name!r}; name the file after it "
                            f"({scenario.name}.yaml), which is how it is found")  # fmt: skip


def library(subject: Subject) -> Path:
    """Where a subject ships its scenarios: `scenarios/` beside its module."""
    return Path(inspect.getfile(type(subject))).parent / "scenarios"


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES) if folder.is_dir() else []


def libraries() -> list[Path]:
    """The scenario folders of the installed subjects."""
    found: list[Path] = []
    for name in plugins.names(plugins.SUBJECTS):
        try:
            found.append(library(plugins.load_subject(name)))
        except SubjectError:
            continue  # a broken plugin has no library; `subjects list` says why
    return found


def builtin() -> list[Path]:
    """Every scenario file the installed subjects ship."""
    return [f for folder in libraries() for f in files(folder)]


def find(names: Sequence[str], folders: Iterable[Path] = ()) -> list[Scenario]:
    """Scenarios by name (from the built-in libraries and ``folders``) or by file or folder
    path; none named: every one of ``folders``, or of the built-in library."""
    folders = list(folders)
    known: dict[str, Path] = {}
    for path in [*builtin(), *(f for folder in folders for f in _files_of(folder))]:
        known[path.stem] = path  # a user's folder overrides a built-in of the same name
    if not names:
        paths = [f for folder in folders for f in _files_of(folder)] if folders else builtin()
        return [load(p) for p in paths]
    chosen: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            chosen += files(path)
        elif path.suffix in SUFFIXES or path.exists():
            chosen.append(path)
        elif name in known:
            chosen.append(known[name])
        else:
            raise ScenarioError(
                f"no scenario named {name!r}",
                hint="`operator eval scenarios` lists them; a path to a .yaml file works too.",
            )
    scenarios = [load(p) for p in dict.fromkeys(p.resolve() for p in chosen)]
    names_seen: dict[str, Path] = {}
    for s in scenarios:
        if s.name in names_seen and names_seen[s.name] != s.path:
            raise ScenarioError(f"two scenarios are named {s.name!r}: {names_seen[s.name]} "
                                f"and {s.path}")  # fmt: skip
        names_seen[s.name] = s.path
    return scenarios


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return files(path)
    if path.exists():
        return [path]
    raise ScenarioError(f"--scenarios {path}: no such file or folder")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
