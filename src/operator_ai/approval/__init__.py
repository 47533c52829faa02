"""The approval gate: a classifier that proves shell commands read-only, and the wait for a
human's decision on the rest."""

from operator_ai.approval.classify import Classification, Verdict, classify
from operator_ai.approval.gate import ALWAYS, MODES, NEVER, WRITES, Gate

__all__ = ["ALWAYS", "MODES", "NEVER", "WRITES", "Classification", "Gate", "Verdict", "classify"]
