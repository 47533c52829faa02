"""Language models: one seam, ``Model.complete(system, messages, tools) -> Turn``.

The conversation is typed: a ``UserMessage``, the model's own ``AssistantMessage`` (its
``Turn``), and ``ToolResults`` answering the tool calls of the turn before. Adapters turn these
into their provider's wire format and back. ``load_model(spec, settings)`` (models.spec) builds
one from a spec string such as ``anthropic:claude-sonnet-5-5`` or ``scripted:path.yaml``: the
prefix names a ``ModelProvider`` registered in the ``operator_ai.models`` entry-point group,
where the built-ins (models.providers) register too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from operator_ai.config import Settings


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for. ``error`` says why its arguments could not be used."""

    id: str
    name: str
    arguments: dict[str, Any]
    error: str | None = None


def call_from_json(call_id: str, name: str, arguments: str) -> ToolCall:
    """A ToolCall whose arguments came as JSON text; text that is not a JSON object sets
    ``error`` so the agent can tell the model what was wrong."""
    if not arguments.strip():
        return ToolCall(call_id, name, {})
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        problem = f"arguments are not valid JSON ({exc.msg} at character {exc.pos})"
        return ToolCall(call_id, name, {}, error=problem)
    if not isinstance(parsed, dict):
        problem = f"arguments must be a JSON object, got {type(parsed).__name__}"
        return ToolCall(call_id, name, {}, error=problem)
    return ToolCall(call_id, name, parsed)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


@dataclass(frozen=True, slots=True)
class Turn:
    """What the model said: text, tool calls, what it cost, and why it stopped."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = "end_turn"
    thinking: str = ""
    """What the model reasoned before it answered (Claude's thinking blocks), for the audit:
    not part of ``text``, so it cannot read as the answer."""
    raw: tuple[dict[str, Any], ...] = ()
    """The reply's content exactly as the provider sent it, for adapters that must echo it
    back unchanged (Claude's signed thinking blocks); empty where nothing needs echoing."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class UserMessage:
    text: str


@dataclass(frozen=True, slots=True)
class AssistantMessage:
    turn: Turn


@dataclass(frozen=True, slots=True)
class ToolResults:
    """The answers to every tool call of the turn before, plus optional text after them."""

    results: tuple[ToolResult, ...]
    text: str = ""


Message = UserMessage | AssistantMessage | ToolResults


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema object


SHELL = Tool(
    name="shell",
    description=(
        "Run one bash command inside the lab's sandbox and get its exit code, stdout and "
        "stderr. Long output is cut to its head and tail, and each command has a timeout."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The bash command to run."},
            "reasoning": {
                "type": "string",
                "description": "Why you run it: what you expect to learn or change.",
            },
        },
        "required": ["command", "reasoning"],
    },
)


class Model(Protocol):
    spec: str  # as given, e.g. "anthropic:claude-sonnet-5-5"
    name: str  # the provider's model name, which the price table is keyed on

    def complete(self, system: str, messages: Sequence[Message], tools: Sequence[Tool]) -> Turn:
        """One turn. Raises ModelUnavailable after retries, ModelRejected on a refusal."""
        ...

    def close(self) -> None:
        """Release the HTTP connections, if any."""
        ...


class ModelProvider(Protocol):
    """Builds the Model a spec names; ``rest`` is the spec after its ``PREFIX:``. Registered
    under that prefix in the ``operator_ai.models`` entry-point group. Raises NoModel, saying
    what to fix, when the spec or the settings cannot make one."""

    def __call__(self, spec: str, rest: str, settings: Settings) -> Model: ...
