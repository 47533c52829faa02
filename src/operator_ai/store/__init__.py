"""Tickets, sessions and the audit trail, on SQLite or PostgreSQL."""

from operator_ai.core import Violation
from operator_ai.store.audit import Verification
from operator_ai.store.records import (
    Approval,
    ApprovalStatus,
    AuditEntry,
    AuditKind,
    Claim,
    EvalRun,
    EvalTrial,
    Outcome,
    Session,
    Status,
    Ticket,
    TicketEvent,
    TrialOutcome,
)
from operator_ai.store.store import Store

__all__ = [
    "Approval",
    "ApprovalStatus",
    "AuditEntry",
    "AuditKind",
    "Claim",
    "EvalRun",
    "EvalTrial",
    "Outcome",
    "Session",
    "Status",
    "Store",
    "Ticket",
    "TicketEvent",
    "TrialOutcome",
    "Verification",
    "Violation",
]
