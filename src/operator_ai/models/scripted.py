"""A model that plays back a script: for tests, demos and working without an API key.

The script is YAML or JSON::

    turns:
      - text: Looking at the cluster.
        shell: [{command: etcdctl endpoint health, reasoning: see which member is down}]
      - text: Restarted it; fixed.               # no shell: the conversation ends here
      - calls: [{name: shell, arguments: "{not json"}]   # raw output, for testing the agent
        usage: {input_tokens: 1200, output_tokens: 80}

Each ``complete()`` returns the next turn, whatever it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from operator_ai.errors import NoModel
from operator_ai.models import Message, Tool, ToolCall, Turn, Usage, call_from_json

EXHAUSTED = "(the script has no more turns)"
SHAPE = (
    'A script is {"turns": [{"text": "...", "shell": [{"command": "...", "reasoning": "..."}]}]}'
    '; a turn may also have "calls": [{"name": "...", "arguments": {...} or "..."}] and '
    '"usage": {"input_tokens": N, "output_tokens": M}.'
)
_TURN_KEYS = {"text", "shell", "calls", "usage"}
_USAGE_KEYS = {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"}


class ScriptedModel:
    """Plays back the turns of a script, one per ``complete()``."""

    name = "scripted"

    def __init__(self, spec: str, turns: Sequence[Turn]) -> None:
        self.spec = spec
        self.turns = list(turns)
        self.played = 0

    @classmethod
    def from_file(cls, path: Path, spec: str | None = None) -> ScriptedModel:
        """Load a script; NoModel says what is wrong with it and where."""
        return cls(spec or f"scripted:{path}", load_script(path))

    def __repr__(self) -> str:
        return f"ScriptedModel({self.spec!r})"

    def close(self) -> None:
        pass  # nothing held open

    def complete(self, system: str, messages: Sequence[Message], tools: Sequence[Tool]) -> Turn:
        """The next turn of the script, or a closing one when it has run out."""
        self.played += 1
        if self.played > len(self.turns):
            return Turn(EXHAUSTED)
        return self.turns[self.played - 1]


def load_script(path: Path) -> list[Turn]:
    """The turns of the script at ``path``; NoModel says what is wrong with it and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _invalid(f"cannot read model script {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise _invalid(f"model script {path} is not UTF-8 text: {exc.reason}") from exc
    is_json = path.suffix == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if is_json else "YAML"
        raise _invalid(f"model script {path} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
        raise _invalid(f"model script {path}: expected a mapping with a list of turns")
    return [_turn(path, n, raw) for n, raw in enumerate(data["turns"])]


def _turn(path: Path, n: int, raw: object) -> Turn:
    where = f"model script {path}, turns[{n}]"
    if not isinstance(raw, dict):
        raise _invalid(f"{where}: expected a mapping, got {_kind(raw)}")
    unknown = sorted(set(raw) - _TURN_KEYS)
    if unknown:
        raise _invalid(f"{where}: unknown key {unknown[0]!r}")
    text = raw.get("text", "")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text: expected a string, got {_kind(text)}")
    calls = [
        _shell(where, f"call-{n + 1}-{i}", entry)
        for i, entry in enumerate(_list(where, raw, "shell"))
    ]
    for entry in _list(where, raw, "calls"):
        calls.append(_raw_call(where, f"call-{n + 1}-{len(calls)}", entry))
    return Turn(
        text,
        tuple(calls),
        _usage(where, raw.get("usage", {})),
        "tool_use" if calls else "end_turn",
    )


def _list(where: str, raw: dict[str, Any], key: str) -> list[object]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise _invalid(f"{where}.{key}: expected a list, got {_kind(value)}")
    return value


def _shell(where: str, call_id: str, entry: object) -> ToolCall:
    command = entry.get("command") if isinstance(entry, dict) else None
    reasoning = entry.get("reasoning", "") if isinstance(entry, dict) else None
    if not isinstance(command, str) or not isinstance(reasoning, str):
        raise _invalid(
            f"{where}.shell: each entry needs a string command and an optional string "
            f"reasoning, got {entry!r}"
        )
    return ToolCall(call_id, "shell", {"command": command, "reasoning": reasoning})


def _raw_call(where: str, call_id: str, entry: object) -> ToolCall:
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or not isinstance(name, str):
        raise _invalid(f"{where}.calls: each entry needs a string name, got {entry!r}")
    arguments = entry.get("arguments", {})
    if isinstance(arguments, str):
        return call_from_json(call_id, name, arguments)
    if not isinstance(arguments, dict):
        raise _invalid(
            f"{where}.calls: arguments must be a mapping or a string, got {_kind(arguments)}"
        )
    return ToolCall(call_id, name, arguments)


def _usage(where: str, raw: object) -> Usage:
    if not isinstance(raw, dict) or not set(raw) <= _USAGE_KEYS:
        raise _invalid(f"{where}.usage: expected a mapping of {', '.join(sorted(_USAGE_KEYS))}")
    if not all(type(v) is int and v >= 0 for v in raw.values()):
        raise _invalid(f"{where}.usage: token counts must be whole numbers, 0 or more")
    return Usage(**raw)


def _invalid(message: str) -> NoModel:
    return NoModel(message, hint=SHAPE)


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__
