"""The store's records: what the store hands back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OPEN = "open"
    WORKING = "working"
    RESOLVED = "resolved"
    ESCALATED = "escalated"


class Outcome(StrEnum):
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"


class AuditKind(StrEnum):
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    VERIFICATION = "verification"
    NOTE = "note"


SEVERITIES = ("critical", "warning", "info")


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    key: str
    subject: str
    invariant: str
    target: str
    severity: str
    status: Status
    held: bool
    message: str
    evidence: dict[str, Any]
    first_seen_at: datetime
    opened_at: datetime
    last_seen_at: datetime
    occurrences: int
    times_reopened: int
    claimed_by: str | None
    lease_until: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    cleared_at: datetime | None
    scope: str
    """Which watch it belongs to: a lab's name, or an eval trial's (`eval/RUN/TRIAL`)."""
    incident_id: int | None = None
    """The incident it belongs to: the id of the incident's first ticket."""
    session_id: int | None = None
    """The session that holds it (while working) or held it last."""
    placed_at: datetime | None = None
    """When it last (re)opened into its incident."""

    @property
    def time_to_detect(self) -> float:
        """Seconds from the first sighting of the violation to the ticket opening."""
        return (self.opened_at - self.first_seen_at).total_seconds()


@dataclass(frozen=True, slots=True)
class TicketEvent:
    id: int
    ticket_id: int
    at: datetime
    kind: str
    actor: str
    detail: str
    session_id: int | None


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    ticket_id: int
    worker: str
    model: str | None
    started_at: datetime
    ended_at: datetime | None
    outcome: Outcome | None
    summary: str | None
    steps: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    session_id: int
    seq: int
    kind: AuditKind
    summary: str
    content: str
    tool: str | None
    params: dict[str, Any] | None
    exit_code: int | None
    duration_ms: int | None
    at: datetime
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A ticket held under lease by one worker, and the session working on it."""

    ticket: Ticket
    session: Session
    tickets: tuple[Ticket, ...]
    """Every ticket of the incident the session took, ``ticket`` (the most urgent) too."""


@dataclass(frozen=True, slots=True)
class Approval:
    """A command waiting for a human, or the decision taken on it."""

    id: int
    session_id: int
    ticket_id: int
    command: str
    command_sha256: str
    reasoning: str
    verdict: str
    verdict_why: str
    mode: str
    status: ApprovalStatus
    requested_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None

    @property
    def pending(self) -> bool:
        return self.status == ApprovalStatus.PENDING


class TrialOutcome(StrEnum):
    """How an eval trial ended (README, "Measuring an AI operator")."""

    SUCCESS = "success"
    NOT_DETECTED = "not_detected"
    ESCALATED = "escalated"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class EvalRun:
    """One model against a set of scenarios, each tried ``trials`` times."""

    id: int
    model: str
    campaign: str | None
    started_at: datetime
    ended_at: datetime | None
    operator_version: str
    prompt_sha256: str
    scenarios: list[str]
    trials: int
    parallel: int


@dataclass(frozen=True, slots=True)
class EvalTrial:
    """One incident: a scenario injected into a healthy lab, worked, and judged. Times are
    seconds from the first fault's injection."""

    id: int
    run_id: int
    scenario: str
    scenario_sha256: str
    attempt: int
    lab: str
    targets: dict[str, str]
    """Each alias of the scenario (leader, follower) and the node it named in this trial."""
    outcome: TrialOutcome
    why: str
    started_at: datetime
    injected_at: datetime | None
    ended_at: datetime
    ttd_seconds: float | None
    ttm_seconds: float | None
    overhead_seconds: float
    """The harness's own time: everything but the agent's work and the settle window."""
    steps: int
    commands: int
    state_changing: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    error_rate: float | None
    """The workload's error rate over the settle window."""
    false_positives: int
    """Tickets a no-op scenario opened."""
    tickets: list[int]
    sessions: list[int]
