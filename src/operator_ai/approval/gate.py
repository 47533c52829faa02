"""The approval gate: which of the agent's commands wait for a human, and the wait.

In ``writes`` mode a command the classifier proves read-only runs at once and every other
one waits; in ``always`` mode every command waits; in ``never`` mode none does. A waiting
command is a request in the store, decided from the CLI or the dashboard by a human. The
wait ends with that decision, or with a denial when it lasts ``timeout`` seconds or when
the session must end (its time budget, a stop): what is not approved never runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

from operator_ai.approval.classify import Classification, classify
from operator_ai.config import ApprovalMode
from operator_ai.errors import InvalidTransition, SandboxError, StoreError
from operator_ai.store import Approval, ApprovalStatus, Store
from operator_ai.store.approvals import sha256

NEVER, WRITES, ALWAYS = get_args(ApprovalMode)
MODES: tuple[str, ...] = (NEVER, WRITES, ALWAYS)
DEFAULT_TIMEOUT = 600.0
PLATFORM = "operator"
"""Who decides a request no human decided in time."""


@dataclass
class Gate:
    store: Store
    mode: str = NEVER
    timeout: float = DEFAULT_TIMEOUT
    poll: float = 0.25

    def judge(self, command: str) -> Classification | None:
        """Why ``command`` must wait for a human, or None when it runs at once."""
        if self.mode == NEVER:
            return None
        verdict = classify(command)
        if self.mode == WRITES and verdict.read_only:
            return None
        return verdict

    def wait(
        self,
        session_id: int,
        command: str,
        reasoning: str,
        verdict: Classification,
        give_up: Callable[[], str | None],
        on_request: Callable[[Approval], None] = lambda approval: None,
    ) -> Approval:
        """Ask, and wait for the decision. ``give_up`` says why the session cannot wait any
        longer (None while it can); the request is then denied, as after ``timeout``. An
        approval comes back only for exactly the command that was asked about."""
        approval = self.store.request_approval(
            session_id, command, reasoning, str(verdict.verdict), verdict.why, self.mode
        )
        on_request(approval)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                current = self.store.approval(approval.id)
                if not current.pending:
                    return _checked(current, sha256(command))
                why = give_up() or (
                    f"no decision within {self.timeout:g} s"
                    if time.monotonic() >= deadline
                    else None
                )
                if why:
                    return self.store.decide_approval(
                        approval.id, ApprovalStatus.TIMED_OUT, PLATFORM, why
                    )
            except InvalidTransition:
                continue  # a human decided in the meantime: that decision stands
            except StoreError:
                if time.monotonic() >= deadline:
                    raise  # the store stayed away for the whole wait
            time.sleep(self.poll)


def _checked(approval: Approval, asked: str) -> Approval:
    """The decided request, if it is still the command that was asked about."""
    if approval.command_sha256 != asked or sha256(approval.command) != asked:
        raise SandboxError(
            f"approval #{approval.id}: the command no longer matches the one asked about",
            hint="The store was changed behind Operator's back; `operator audit verify`.",
        )
    return approval


def refusal(approval: Approval) -> str:
    """What the model is told of a command that was not approved."""
    if approval.status == ApprovalStatus.DENIED:
        return f"Not run: a human denied this command. Their reason: {approval.reason}"
    return f"Not run: {approval.reason}; it counts as denied."


MODE_TEXT = {
    NEVER: "",
    WRITES: "A human approves each command that may change state before it runs; commands "
    "shown to be read-only run at once. Batch your reads, and say in each write's reasoning "
    "why it is needed: the human reads it. A command that is not approved comes back with "
    "the reason, and does not run.",
    ALWAYS: "A human approves every command before it runs, reads included. Make each "
    "command count, and say in its reasoning why it is needed: the human reads it. A command "
    "that is not approved comes back with the reason, and does not run.",
}
"""What the agent is told of the mode it works in."""
