"""`operator demo`: the whole story on one screen, chapter by chapter."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime

import typer
from rich.rule import Rule

from operator_ai.cli.context import ApprovalOption, app_context, approval_mode
from operator_ai.cli.lab import print_status, up_lab
from operator_ai.cli.output import console
from operator_ai.errors import LabError
from operator_ai.lab import Lab, LabDir
from operator_ai.lab import injections as chaos
from operator_ai.lab.load import read_workload
from operator_ai.models.spec import load_model
from operator_ai.run import AGENT_EVENTS, Event, Runner, victim
from operator_ai.store import Status, Store, Ticket
from operator_ai.tui.text import shown
from operator_ai.tui.transcript import describe

NO_MODEL = """\
[bold]No model is configured[/], so the demo stops at the ticket. To let the agent repair it:
  export ANTHROPIC_API_KEY=...   then  operator demo {subject} --model anthropic:claude-sonnet-5-5
  export OPENAI_API_KEY=...      then  operator demo {subject} --model openai:gpt-4.1
  a local server (Ollama...):          operator demo {subject} --model openai:qwen2.5@http://127.0.0.1:11434/v1
The demo now reverts the fault itself, so the cluster is left healthy."""


def demo(
    ctx: typer.Context,
    subject: str = typer.Argument("etcd", help="etcd or ratelimiter."),
    auto: bool = typer.Option(False, "--auto", help="Advance by itself, without key presses."),
    model: str | None = typer.Option(
        None, "--model", help="The agent's model (default OPERATOR_MODEL)."
    ),
    approval: str | None = ApprovalOption,
) -> None:
    """A guided story: health, load, a fault, detection, the agent's repair, and recovery."""
    context = app_context(ctx)
    settings = context.settings
    spec = model or settings.model
    if spec:
        load_model(spec, settings).close()
    auto = auto or not sys.stdin.isatty()
    lab = Lab(LabDir(settings.home, subject))
    store = context.store
    steps: list[Event] = []
    arrived = threading.Condition()

    def on_event(event: Event) -> None:
        with arrived:
            steps.append(event)
            arrived.notify_all()

    chapter(1, "Health", auto, first=True)
    up_lab(ctx, lab, subject)
    print_status(lab, as_json=False)

    runner = Runner(settings, store, lab, model=spec, rate=100,
                    approval=approval_mode(ctx, approval), on_event=on_event)  # fmt: skip
    injection = None
    try:
        chapter(2, "Load", auto)
        runner.start()
        time.sleep(4)
        stats = read_workload(lab.path)
        if stats:
            window = stats["window"]
            console.print(f"load: {window['ops']} requests in the last seconds, "
                          f"{window['errors']} errors, p99 {window['p99_ms']} ms")  # fmt: skip

        chapter(3, "Fault", auto)
        target = victim(lab)
        for n in (3, 2, 1):
            console.print(f"killing {target} in {n}…")
            time.sleep(1)
        injection = chaos.inject(lab, "kill", target, {})
        injected = datetime.fromisoformat(injection.injected_at)
        console.print(f"[bold red]fault:[/] kill {target} (SIGKILL) at {injected:%H:%M:%S}")

        chapter(4, "Detection", auto)
        ticket = wait_for_ticket(store, runner.monitor.scope, target)
        # A key seen before reopens its old ticket: count from when it (re)opened this time.
        opened = max(e.at for e in store.events(ticket.id) if e.kind in ("opened", "reopened"))
        ttd = (opened - injected).total_seconds()
        console.print(f"[bold]ticket #{ticket.id}[/] {shown(ticket.key)}: {shown(ticket.message)}")
        console.print(f"[bold]detected in {ttd:.2f} s[/] (fault injected → ticket opened)")

        chapter(5, "Repair", auto)
        if not spec:
            console.print(NO_MODEL.format(subject=subject), soft_wrap=True)
            chaos.revert(lab, injection.id)
        else:
            follow_agent(steps, arrived, ticket.id)

        chapter(6, "Verified recovery", auto)
        resolved = wait_resolved(store, ticket.id)
        how = "time to mitigate" if spec else "time to recover (the demo reverted the fault)"
        if resolved.status == Status.RESOLVED and resolved.resolved_at:
            ttm = (resolved.resolved_at - injected).total_seconds()
            outcome = f"{how} {ttm:.2f} s"
            console.print(f"[bold green]recovered:[/] ticket #{resolved.id} resolved by "
                          f"{resolved.resolved_by}; [bold]{outcome}[/]")  # fmt: skip
        else:  # escalated, or still open when the wait ran out: say so, and measure nothing
            outcome = f"not recovered (ticket {resolved.status})"
            console.print(f"[bold red]{outcome}:[/] ticket #{resolved.id} waits for a human; "
                          "the demo reverts the fault so the cluster is left whole")  # fmt: skip
        chaos.revert(lab, injection.id)  # closes the record; the node may run again already
        print_status(lab, as_json=False)

        chapter(7, "Summary", auto)
        sessions = [s for s in store.sessions(ticket.id) if s.started_at >= injected]
        console.print(f"time to detect {ttd:.2f} s · {outcome}")
        if sessions:
            s = sessions[0]
            console.print(
                f"agent session {s.id}: {s.outcome}, {s.steps} turns, ${s.cost_usd:.4f}; "
                f"read it with `operator audit show {s.id}`"
            )
        else:
            console.print("no agent session: add a model to see the repair")
    finally:
        runner.stop()
        if injection is not None:
            chaos.revert(lab, injection.id)  # whatever happened, leave the cluster whole


def chapter(number: int, title: str, auto: bool, first: bool = False) -> None:
    if not first:
        if auto:
            time.sleep(1)
        else:
            console.input("[dim]press Enter to continue[/]")
    console.print(Rule(f"[bold]{number}. {title}[/]"))


def wait_for_ticket(store: Store, scope: str, target: str, timeout: float = 60.0) -> Ticket:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [t for t in store.live(scope=scope) if t.target == target]
        if found:
            return found[0]
        time.sleep(0.1)
    raise LabError(f"no ticket for {target} within {timeout:.0f} s; is the monitor observing?")


def follow_agent(steps: list[Event], arrived: threading.Condition, ticket_id: int) -> None:
    """Print the agent's steps as they happen, until its session on the ticket ends."""
    printed = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with arrived:
            arrived.wait(timeout=1.0)
            new, printed = steps[printed:], len(steps)
        for event in new:
            if event.kind in AGENT_EVENTS:
                console.print(describe(event), soft_wrap=True)
            if event.kind == "ended" and ticket_id in event.data.get("tickets", ()):
                return


def wait_resolved(store: Store, ticket_id: int, timeout: float = 60.0) -> Ticket:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticket = store.ticket(ticket_id)
        if ticket.status != Status.OPEN and ticket.status != Status.WORKING:
            return ticket
        time.sleep(0.2)
    return store.ticket(ticket_id)
