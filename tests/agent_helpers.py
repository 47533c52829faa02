"""Helpers for agent tests: scripted models written on the fly, and a model that records
what it was sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from operator_ai.config import Settings
from operator_ai.models import Message, Model, Tool, ToolResults, Turn, UserMessage
from operator_ai.models.spec import load_model
from operator_ai.store import Claim, Store, Violation


def claim(store: Store) -> Claim:
    """A member_down ticket on etcd2, claimed by worker-1."""
    store.report_violation(Violation("etcd", "member_down", "etcd2", "etcd2 is down"))
    claimed = store.claim("worker-1", 60)
    assert claimed is not None
    return claimed


def scripted(path: Path, *turns: dict[str, Any]) -> str:
    """Write a script of turns and return its model spec."""
    path.write_text(yaml.safe_dump({"turns": list(turns)}))
    return f"scripted:{path}"


def shell(command: str, reasoning: str = "test step") -> dict[str, Any]:
    return {"text": f"Running {command}", "shell": [{"command": command, "reasoning": reasoning}]}


@dataclass
class Recording:
    """A real model, with every conversation it was sent kept for the test to read."""

    model: Model
    sent: list[list[Message]] = field(default_factory=list)
    system: str = ""

    @property
    def spec(self) -> str:
        return self.model.spec

    @property
    def name(self) -> str:
        return self.model.name

    def complete(self, system: str, messages: Sequence[Message], tools: Sequence[Tool]) -> Turn:
        self.sent.append(list(messages))
        self.system = system
        return self.model.complete(system, messages, tools)

    def close(self) -> None:
        self.model.close()

    def tool_results(self) -> list[str]:
        last = self.sent[-1]
        return [r.content for m in last if isinstance(m, ToolResults) for r in m.results]

    def user_texts(self) -> list[str]:
        return [m.text for m in self.sent[-1] if isinstance(m, UserMessage)]


def recording(spec: str, settings: Settings) -> Recording:
    return Recording(load_model(spec, settings))
