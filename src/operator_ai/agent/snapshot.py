"""The diagnostic snapshot: the subject's read-only commands, run together in the agent's
sandbox before the model's first turn, so that it starts from what an engineer looks at first
instead of spending its first turns gathering it."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from operator_ai.agent.prompts import for_model
from operator_ai.sandbox import CommandResult, Sandbox

TOOL = "snapshot"
"""The tool name of the platform's own commands in the audit trail (the model's: shell)."""
TIMEOUT = 5.0
CAP = 2 * 1024
"""Bytes of each command's output the model sees, head and tail."""


def take(sandbox: Sandbox, commands: Sequence[str]) -> list[CommandResult]:
    """Run every command at once, each in its own sandbox; the results in order."""
    if not commands:
        return []
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda command: sandbox.run(command, TIMEOUT), commands))


def text(commands: Sequence[str], results: Sequence[CommandResult]) -> str:
    """What the model is shown: each command, and its output cut to head and tail."""
    return "\n\n".join(
        f"$ {command}\n{for_model(result, CAP)}"
        for command, result in zip(commands, results, strict=True)
    )
