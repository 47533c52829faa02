"""The agent: claim a ticket, converse with a model that has one tool, run its commands in
a sandbox, and verify the fix with the monitor before calling the ticket resolved."""

from operator_ai.agent.budget import Budget, Spend
from operator_ai.agent.loop import SETTLE_SECONDS, Agent, Listener
from operator_ai.agent.summary import Summarizer
from operator_ai.agent.worker import run_workers, work, worker_name

__all__ = [
    "SETTLE_SECONDS",
    "Agent",
    "Budget",
    "Listener",
    "Spend",
    "Summarizer",
    "run_workers",
    "work",
    "worker_name",
]
