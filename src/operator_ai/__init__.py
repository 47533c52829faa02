"""Operator: an autonomous AI operator for distributed systems.

The public API is small on purpose: the store and its records, the settings, and the
error tree. Everything else is reached through the CLI or the subpackages.
"""

from operator_ai.config import Settings, load_settings
from operator_ai.errors import OperatorError
from operator_ai.store import AuditEntry, Session, Store, Ticket, TicketEvent, Violation

__all__ = [
    "AuditEntry",
    "OperatorError",
    "Session",
    "Settings",
    "Store",
    "Ticket",
    "TicketEvent",
    "Violation",
    "load_settings",
]
__version__ = "0.1.0"
