"""`operator agent`: workers that claim tickets and let a model repair the lab, verified."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import typer

from operator_ai.agent import SETTLE_SECONDS, Budget, run_workers, work
from operator_ai.agent.worker import AgentOptions, agent_factory
from operator_ai.cli.context import ApprovalOption, app_context, approval_mode, stop_on_signals
from operator_ai.cli.output import JsonLinesOption, console, err_console, print_json_line
from operator_ai.errors import NoModel, OperatorError
from operator_ai.models.spec import load_model
from operator_ai.run import Event
from operator_ai.sandbox import DEFAULT_TIMEOUT
from operator_ai.tui.transcript import describe

app = typer.Typer(help="Run agent workers on the ticket queue.", no_args_is_help=True)


@app.command()
def run(
    ctx: typer.Context,
    model: str | None = typer.Option(
        None,
        "--model",
        help="anthropic:NAME, openai:NAME[@BASE_URL] or scripted:PATH (default: OPERATOR_MODEL).",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Tickets worked at the same time."),
    once: bool = typer.Option(False, "--once", help="Each worker takes at most one ticket."),
    max_steps: int = typer.Option(30, "--max-steps", min=1, help="Model turns per session."),
    max_tokens: int = typer.Option(1_000_000, "--max-tokens", min=1, help="Tokens per session."),
    max_minutes: float = typer.Option(15.0, "--max-minutes", help="Wall time per session."),
    max_cost: float = typer.Option(2.0, "--max-cost", help="USD per session."),
    settle: float = typer.Option(
        SETTLE_SECONDS, "--settle", help="Seconds to wait for the monitor to confirm a fix."
    ),
    command_timeout: float = typer.Option(
        DEFAULT_TIMEOUT,
        "--command-timeout",
        help="Seconds before a command's sandbox is torn down.",
    ),
    lab_name: str | None = typer.Option(
        None, "--lab", help="Work only this lab's tickets (default: any lab's, each in its own)."
    ),
    unsafe_host: bool = typer.Option(
        False, "--unsafe-host", help="Run commands on the host, without the sandbox. Unsafe."
    ),
    approval: str | None = ApprovalOption,
    as_json: bool = JsonLinesOption,
) -> None:
    """Claim tickets and work each to a verified outcome. Needs `operator monitor run` (or
    `operator run`) alongside: only the monitor can confirm a fix."""
    context = app_context(ctx)
    settings = context.settings
    spec = model or settings.model
    if not spec:
        raise NoModel("no model configured")
    load_model(spec, settings)  # fail now, not in the first session, on a bad spec or key
    if unsafe_host:
        err_console.print("[bold red]warning:[/] --unsafe-host: commands run on this host as you")
    options = AgentOptions(
        model=spec,
        budget=Budget(max_steps, max_tokens, max_minutes, max_cost),
        settle_seconds=settle,
        command_timeout=command_timeout,
        unsafe_host=unsafe_host,
        lab=lab_name,
        approval=approval_mode(ctx, approval),
        approval_timeout=settings.approval_timeout_seconds,
    )
    stop = stop_on_signals()
    show = _print_json if as_json else _print
    store = context.store
    agent_for = agent_factory(settings, store, options, stop, show)

    def on_error(worker: str, exc: Exception) -> None:
        if isinstance(exc, OperatorError):
            show("error", {"message": str(exc), "hint": exc.hint})
        else:  # a bug or a foreign error: the session has ended failed; the worker goes on
            show("error", {"message": f"{type(exc).__name__}: {exc}"})

    def target(name: str) -> None:
        work(store, name, agent_for, stop, model=spec, lease_seconds=settings.lease_seconds,
             once=once, on_error=on_error, scope=lab_name)  # fmt: skip

    if not as_json:
        mode = "one ticket each" if once else "Ctrl-C stops"
        err_console.print(f"agent: {workers} worker(s) with {spec}; {mode}")
    run_workers(workers, target)


def _print_json(kind: str, data: dict[str, object]) -> None:
    record = {"at": datetime.now(UTC), "worker": threading.current_thread().name}
    print_json_line({**record, "event": kind, **data})


def _print(kind: str, data: dict[str, object]) -> None:
    worker = threading.current_thread().name
    console.print(describe(Event(datetime.now(UTC), kind, {**data, "worker": worker})),
                  soft_wrap=True)  # fmt: skip
