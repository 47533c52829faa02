"""What a session may spend, and what it has spent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from operator_ai.models import Usage


@dataclass(frozen=True, slots=True)
class Budget:
    max_steps: int = 30  # model turns
    max_tokens: int = 1_000_000
    max_minutes: float = 15.0
    max_cost: float = 2.0  # USD

    def __str__(self) -> str:
        return (
            f"budget {self.max_steps} turns, {self.max_tokens:,} tokens, "
            f"{self.max_minutes:g} min, ${self.max_cost:g}"
        )


@dataclass(slots=True)
class Spend:
    steps: int = 0
    commands: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def seconds_left(self, budget: Budget) -> float:
        """Wall time left: what a command or a wait may take before the budget is spent."""
        return budget.max_minutes * 60 - (time.monotonic() - self.started)

    def over(self, budget: Budget) -> str | None:
        """Why the budget is spent, or None while it is not."""
        if self.steps >= budget.max_steps:
            return f"step budget spent: {self.steps} of {budget.max_steps} model turns"
        if self.usage.total >= budget.max_tokens:
            return f"token budget spent: {self.usage.total:,} of {budget.max_tokens:,}"
        if self.minutes >= budget.max_minutes:
            return f"time budget spent: {self.minutes:.3g} of {budget.max_minutes:g} minutes"
        if self.cost >= budget.max_cost:
            return f"cost budget spent: ${self.cost:.4f} of ${budget.max_cost:g}"
        return None
