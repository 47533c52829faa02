"""One-line summaries for the audit views, from the provider's small model when one is
configured. Without one, or when it fails, the store's deterministic truncation stands in.
Summaries sit beside the raw record and never replace it."""

from __future__ import annotations

from operator_ai.errors import ModelError
from operator_ai.models import Model, UserMessage

INSTRUCTION = (
    "Summarise the text the user sends in one plain line of at most 15 words, for an "
    "incident log. Say what it shows or does; add nothing else."
)
MAX_INPUT = 8000


class Summarizer:
    def __init__(self, model: Model | None = None) -> None:
        self.model = model

    def __call__(self, text: str) -> str | None:
        if self.model is None or not text.strip():
            return None
        try:
            turn = self.model.complete(INSTRUCTION, [UserMessage(text[:MAX_INPUT])], [])
        except ModelError:
            return None
        lines = turn.text.strip().splitlines()
        return lines[0][:200] if lines else None
