"""The `operator` command: the root options, the command groups, and error handling."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from operator_ai import __version__
from operator_ai.cli import (
    agent,
    approvals,
    audit,
    chaos,
    config_cmd,
    demo,
    evals,
    lab,
    monitor,
    run,
    subjects,
    tickets,
)
from operator_ai.cli.context import AppContext
from operator_ai.cli.output import err_console
from operator_ai.errors import OperatorError, UsageError

app = typer.Typer(
    help="Operator: an autonomous AI operator for distributed systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(tickets.app, name="tickets")
app.command("run")(run.run)
app.command("demo")(demo.demo)
app.add_typer(agent.app, name="agent")
app.add_typer(approvals.app, name="approvals")
app.add_typer(audit.app, name="audit")
app.add_typer(lab.app, name="lab")
app.add_typer(chaos.app, name="chaos")
app.add_typer(monitor.app, name="monitor")
app.add_typer(evals.app, name="eval")
app.add_typer(subjects.app, name="subjects")
app.add_typer(config_cmd.app, name="config")


def _version(value: bool) -> None:
    if value:
        print(f"operator-ai {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", help="Operator's directory (default $OPERATOR_HOME or ~/.operator)."
    ),
    db: str | None = typer.Option(
        None, "--db", help="Store URL: sqlite:///PATH or postgresql://USER@HOST/DB."
    ),
    _: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Monitor a cluster, open tickets for broken invariants, and let an agent fix them."""
    context = AppContext({"home": home, "db": db})
    ctx.obj = context
    ctx.call_on_close(context.close)


def main() -> None:
    try:
        app()
    except OperatorError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        if exc.hint:
            err_console.print(f"[dim]hint:[/] {exc.hint}", soft_wrap=True)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
