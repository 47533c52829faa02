"""The agent loop: ask the model, run its commands in the sandbox, verify with the monitor.

A session ends by raising one of the ``End`` exceptions below, each carrying its outcome;
``Agent.run`` catches them and always writes the closing record, whatever escapes: an
error of ours or a foreign one fails the session, an interrupt such as Ctrl-C ends it
interrupted, and either of these last two is raised again once the session is closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from operator_ai.agent import snapshot
from operator_ai.agent.budget import Budget, Spend
from operator_ai.agent.incident import Incident
from operator_ai.agent.prompts import GIVE_UP, for_model, full_output, still_failing, system_prompt
from operator_ai.agent.summary import Summarizer
from operator_ai.approval.classify import Classification
from operator_ai.approval.gate import MODE_TEXT, NEVER, Gate, refusal
from operator_ai.errors import LeaseLost, ModelError, OperatorError, StoreError
from operator_ai.models import (
    SHELL,
    AssistantMessage,
    Message,
    Model,
    ToolCall,
    ToolResult,
    ToolResults,
    UserMessage,
)
from operator_ai.models.prices import cost, price
from operator_ai.sandbox import DEFAULT_TIMEOUT, Sandbox
from operator_ai.store import Approval, ApprovalStatus, AuditKind, Claim, Outcome, Status, Store

SETTLE_SECONDS = 30.0
"""How long the agent waits, by default, for the monitor to confirm a fix holds."""
MIN_SETTLE = 3.0
"""Seconds a verification wait lasts at least, even at the end of the time budget: about
two monitor cycles, what it takes to see a fix hold."""
EMPTY_REPLY = "Your reply was empty. Call the shell tool, or say what you found and did."


class End(Exception):
    outcome: Outcome


class Resolved(End):
    outcome = Outcome.RESOLVED


class Escalated(End):
    outcome = Outcome.ESCALATED


class Failed(End):
    outcome = Outcome.FAILED


class Interrupted(End):
    outcome = Outcome.INTERRUPTED


Listener = Callable[[str, dict[str, object]], None]


@dataclass
class Agent:
    """Works one claimed ticket to an outcome."""

    store: Store
    model: Model
    sandbox: Sandbox
    subject: str
    briefing: str
    budget: Budget = field(default_factory=Budget)
    settle_seconds: float = SETTLE_SECONDS
    command_timeout: float = DEFAULT_TIMEOUT
    lease_seconds: float = 120.0
    backoff_seconds: float = 60.0
    gate: Gate | None = None
    """Which commands wait for a human (None: none does)."""
    diagnostics: Sequence[str] = ()
    """Read-only commands the platform runs before the first turn (the subject's)."""
    summarize: Summarizer = field(default_factory=Summarizer)
    stop: threading.Event = field(default_factory=threading.Event)
    listener: Listener = lambda kind, data: None

    def run(self, claim: Claim) -> Outcome:
        self.session, self.ticket = claim.session.id, claim.ticket
        self.incident = Incident.claimed(self.store, claim)
        self.verified: list[int] | None = None
        """The tickets the monitor confirmed, once it has."""
        self.spend = Spend()
        self.lease_lost = threading.Event()
        finished = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=(finished,), daemon=True)
        escaped: BaseException | None = None
        try:
            self._begin(claim)
            keeper.start()
            self._converse()
        except End as end:
            outcome, reason = end.outcome, str(end)
        except ModelError as exc:
            outcome, reason = Outcome.FAILED, f"model error: {exc}"
        except OperatorError as exc:  # the sandbox, the lab or the store broke
            outcome, reason = Outcome.FAILED, f"platform error: {exc}"
        except Exception as exc:  # a foreign error from a seam, or a bug of ours
            outcome, reason = Outcome.FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
            escaped = exc
        except BaseException as exc:  # Ctrl-C, SystemExit: the worker is going away
            outcome, reason, escaped = Outcome.INTERRUPTED, "the worker was interrupted", exc
        finished.set()
        if keeper.ident is not None:
            keeper.join()
        try:
            self._close(outcome, reason)
        except Exception as exc:
            if escaped is None:
                raise
            escaped.add_note(f"and the session could not be closed: {exc!r}")
        if escaped is not None:
            raise escaped
        return outcome

    def _begin(self, claim: Claim) -> None:
        self._emit("claimed", key=self.incident.keys, model=self.model.spec)
        started = f"session started on {claim.ticket.key} with model {self.model.spec}"
        self._audit(AuditKind.NOTE, f"{started}, sandbox {self.sandbox.name}; {self.budget}")
        if self.model.name != "scripted" and price(self.model.name) is None:
            self._audit(AuditKind.NOTE, f"no price known for {self.model.name}: cost counts as 0")
        if self.sandbox.warning:
            self._audit(AuditKind.NOTE, f"weaker isolation: {self.sandbox.warning}")
            self._emit("warning", message=self.sandbox.warning)

    def _converse(self) -> NoReturn:
        mode = self.gate.mode if self.gate else NEVER
        system = system_prompt(self.subject, self.briefing, self.command_timeout, MODE_TEXT[mode])
        messages: list[Message] = [UserMessage(self.incident.first_message(self._snapshot()))]
        while True:
            self._check()
            turn = self.model.complete(system, messages, [SHELL])
            self.spend.steps += 1
            self.spend.usage += turn.usage
            self.spend.cost += cost(self.model.name, turn.usage)
            messages.append(AssistantMessage(turn))
            reasoning = "\n".join(part for part in (turn.thinking, turn.text) if part.strip())
            if reasoning:
                self._audit(AuditKind.REASONING, reasoning, summary=self.summarize(reasoning))
                self._emit("reasoning", text=reasoning)
            if turn.tool_calls:
                results = tuple(self._call(c) for c in turn.tool_calls)
                messages.append(ToolResults(results, self._news()))
            elif not turn.text.strip():
                self._audit(AuditKind.NOTE, "the model returned an empty reply; asked again")
                messages.append(UserMessage(EMPTY_REPLY))
            elif turn.text.lstrip().startswith(GIVE_UP):
                raise Escalated(turn.text.lstrip()[len(GIVE_UP) :].strip() or "the agent gave up")
            else:
                messages.append(UserMessage(self._verify()))

    def _snapshot(self) -> str:
        """Run the subject's diagnostics, audited as the platform's; what they printed. Under
        an approval gate, only those it would let run at once."""
        commands = [c for c in self.diagnostics if not self.gate or self.gate.judge(c) is None]
        held = [c for c in self.diagnostics if c not in commands]
        if held:
            self._audit(AuditKind.NOTE, "not in the snapshot, as the approval gate would hold "
                        "them: " + "; ".join(held))  # fmt: skip
        for command in commands:  # written ahead, like the model's commands
            self._audit(AuditKind.TOOL_CALL, command, tool=snapshot.TOOL,
                        params={"command": command, "by": "platform"})  # fmt: skip
        results = snapshot.take(self.sandbox, commands)
        for command, result in zip(commands, results, strict=True):
            output = full_output(result)
            self._audit(AuditKind.TOOL_RESULT, output, summary=self.summarize(output),
                        tool=snapshot.TOOL, params={"command": command, "by": "platform"},
                        exit_code=result.exit_code, duration_ms=result.duration_ms)  # fmt: skip
        if results:
            took = max(r.duration_ms for r in results)
            self._emit("snapshot", commands=len(commands), ms=took)
        return snapshot.text(commands, results)

    def _news(self) -> str:
        news = self.incident.news()
        if news:
            self._audit(AuditKind.NOTE, f"told the model: {news}")
            self._emit("news", text=news)
        return news

    def _call(self, call: ToolCall) -> ToolResult:
        command = call.arguments.get("command")
        problem = (
            f"unknown tool {call.name!r}; the only tool is shell(command, reasoning)"
            if call.name != SHELL.name
            else call.error
            or (None if isinstance(command, str) and command.strip() else "no command given")
        )
        if problem:
            self._audit(
                AuditKind.NOTE, f"rejected tool call {call.name}({call.arguments}): {problem}"
            )
            return ToolResult(call.id, f"error: {problem}", is_error=True)
        if self.stop.is_set() or self.lease_lost.is_set():
            return ToolResult(call.id, "not run: the worker is stopping", is_error=True)
        assert isinstance(command, str)
        reasoning = str(call.arguments.get("reasoning", ""))
        waits = self.gate.judge(command) if self.gate else None
        if waits is not None:
            decision = self._ask(command, reasoning, waits)
            if self.stop.is_set() or self.lease_lost.is_set():
                raise Interrupted("the session ended while its command waited for a human")
            if decision.status != ApprovalStatus.APPROVED:
                self._check()  # a wait that spent the time budget escalates the session
                return ToolResult(call.id, refusal(decision), is_error=True)
        params = {"command": command, "reasoning": reasoning}
        self._audit(AuditKind.TOOL_CALL, command, tool=SHELL.name, params=params)
        self._emit("command", command=command, reasoning=reasoning)
        # A command cannot outlast the session's time budget (it gets a second at least).
        timeout = max(1.0, min(self.command_timeout, self.spend.seconds_left(self.budget)))
        result = self.sandbox.run(command, timeout)
        self.spend.commands += 1
        output = full_output(result)
        self._audit(
            AuditKind.TOOL_RESULT,
            output,
            summary=self.summarize(output),
            tool=SHELL.name,
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
        )
        self._emit("result", exit_code=result.exit_code, output=output, ms=result.duration_ms)
        return ToolResult(call.id, for_model(result), is_error=result.exit_code != 0)

    def _ask(self, command: str, reasoning: str, waits: Classification) -> Approval:
        """Wait for a human to approve ``command``; the wait counts against the budget."""
        assert self.gate is not None

        def give_up() -> str | None:
            if self.stop.is_set() or self.lease_lost.is_set():
                return "the session is stopping"
            if self.spend.seconds_left(self.budget) <= 0:
                return "the session's time budget ran out while it waited"
            return None

        def asked(approval: Approval) -> None:
            self._emit("approval", approval=approval.id, command=command, why=waits.why)

        decision = self.gate.wait(self.session, command, reasoning, waits, give_up, asked)
        self._emit("decided", approval=decision.id, status=str(decision.status),
                   by=decision.decided_by, reason=decision.reason)  # fmt: skip
        return decision

    def _verify(self) -> str:
        """Wait for the monitor to see every ticket of the incident hold; resolve, or say
        what still fails."""
        # Cut at the time budget, but long enough for the monitor to see a last fix hold.
        left = self.spend.seconds_left(self.budget)
        settle = min(self.settle_seconds, max(MIN_SETTLE, left))
        keys = self.incident.keys
        self._audit(
            AuditKind.VERIFICATION,
            f"waiting up to {settle:g} s for the monitor to confirm {keys} hold",
        )
        deadline = time.monotonic() + settle
        while True:
            held = self.incident.held()
            lost = [t for t in held if t.status != Status.WORKING]
            if lost or not held or self.lease_lost.is_set():
                taken = lost[0].status if lost else "lease lost"
                raise Interrupted(f"the incident was taken out of this session ({taken})")
            failing = [t for t in held if t.cleared_at is None]
            if not failing:
                seen = f"{max(t.cleared_at for t in held if t.cleared_at):%H:%M:%S} UTC"
                keys = ", ".join(t.key for t in held)
                self._audit(
                    AuditKind.VERIFICATION, f"confirmed: the monitor saw {keys} hold at {seen}"
                )
                self.verified = [t.id for t in held]
                raise Resolved(f"verified: the monitor saw {keys} hold again at {seen}")
            if time.monotonic() >= deadline or self.stop.is_set():
                break
            time.sleep(0.25)
        self.incident.told(held)
        message = still_failing(failing, settle)
        self._audit(
            AuditKind.VERIFICATION, "not confirmed: " + "; ".join(t.message for t in failing)
        )
        self._emit("unverified", message="; ".join(t.message for t in failing),
                   failing=[t.id for t in failing])  # fmt: skip
        return message

    def _check(self) -> None:
        if self.lease_lost.is_set():
            raise Interrupted("the lease was lost: another worker or a human took the ticket")
        if self.stop.is_set():
            raise Interrupted("the worker was asked to stop")
        reason = self.spend.over(self.budget)
        if reason:
            raise Escalated(reason)

    def _keep_lease(self, finished: threading.Event) -> None:
        while not finished.wait(self.lease_seconds / 3):
            try:
                self.store.renew(self.session, self.lease_seconds)
            except LeaseLost:
                self.lease_lost.set()
                return
            except StoreError:
                continue  # the store may be back before the lease runs out

    def _close(self, outcome: Outcome, reason: str) -> None:
        self._audit(AuditKind.NOTE, f"session {outcome}: {reason}")
        failures = sum(s.outcome == Outcome.FAILED for s in self.store.sessions(self.ticket.id))
        backoff = min(self.backoff_seconds * 2**failures, 900.0)
        usage = self.spend.usage
        try:
            self.store.end_session(
                self.session,
                outcome,
                reason,
                steps=self.spend.steps,
                tokens_in=usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
                tokens_out=usage.output_tokens,
                cost_usd=self.spend.cost,
                backoff_seconds=backoff if outcome == Outcome.FAILED else 0.0,
                verified=self.verified,
            )
        except LeaseLost:
            reason += " (the session had already been taken over)"
        held = [t.id for t in self.store.session_tickets(self.session)]
        self._emit("ended", outcome=str(outcome), reason=reason, tickets=held)

    def _audit(self, kind: AuditKind, content: str, **fields: Any) -> None:
        self.store.append_audit(self.session, kind, content, **fields)

    def _emit(self, kind: str, **data: object) -> None:
        """Tell the listener; ``ticket`` is the claimed one, ``tickets`` the whole incident."""
        every = list(self.incident.known)
        self.listener(
            kind, {"session": self.session, "ticket": self.ticket.id, "tickets": every, **data}
        )
