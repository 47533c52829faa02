"""What a turn costs: list prices in US dollars per million tokens, keyed on model name.

A name is priced if it is in the table, or if it is a dated snapshot of a name in the table
(``claude-sonnet-4-5-20250929``, ``gpt-4.1-2025-04-14``). Anything else (scripted and local
models, names this table does not know) costs 0.0; ``price(name) is None`` tells them apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from operator_ai.models import Usage

# A snapshot suffix: -YYYYMMDD (Anthropic) or -YYYY-MM-DD (OpenAI).
_SNAPSHOT = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float


def _openai(input: float, output: float, cache_read: float) -> Price:
    # OpenAI caches automatically and charges nothing extra for writing the cache.
    return Price(input, output, cache_read, input)


PRICES: dict[str, Price] = {
    "claude-opus-5-5": Price(4.00, 20.00, 0.40, 5.00),
    "claude-sonnet-5-5": Price(2.00, 10.00, 0.20, 2.50),
    "claude-sonnet-5": Price(2.00, 10.00, 0.20, 2.50),
    "claude-sonnet-4-6": Price(3.00, 15.00, 0.30, 3.75),
    "claude-opus-4-5": Price(5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-1": Price(15.00, 75.00, 1.50, 18.75),
    "claude-sonnet-4-5": Price(3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30, 3.75),
    "claude-haiku-4-5": Price(1.00, 5.00, 0.10, 1.25),
    "gpt-4.1": _openai(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _openai(0.40, 1.60, 0.10),
    "gpt-4o": _openai(2.50, 10.00, 1.25),
    "gpt-4o-mini": _openai(0.15, 0.60, 0.075),
    "gpt-5": _openai(1.25, 10.00, 0.125),
    "gpt-5-mini": _openai(0.25, 2.00, 0.025),
}


def price(model_name: str) -> Price | None:
    """The list price of a model, or None when the table does not know it."""
    if model_name in PRICES:
        return PRICES[model_name]
    snapshots = [
        name
        for name in PRICES
        if model_name.startswith(name) and _SNAPSHOT.fullmatch(model_name[len(name) :])
    ]
    return PRICES[max(snapshots, key=len)] if snapshots else None


def cost(model_name: str, usage: Usage) -> float:
    """What ``usage`` cost in US dollars; 0.0 for a model without a known price."""
    p = price(model_name)
    if p is None:
        return 0.0
    return (
        usage.input_tokens * p.input
        + usage.output_tokens * p.output
        + usage.cache_read_tokens * p.cache_read
        + usage.cache_write_tokens * p.cache_write
    ) / 1_000_000
