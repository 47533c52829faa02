"""`operator approvals`: the agent's commands that wait for a human, and the decisions."""

from __future__ import annotations

import getpass
import socket

import typer
from rich.panel import Panel

from operator_ai.cli.context import app_context
from operator_ai.cli.output import JsonOption, console, print_json, table, when
from operator_ai.errors import UsageError
from operator_ai.store import Approval, ApprovalStatus
from operator_ai.tui.text import shown, styled

app = typer.Typer(help="Approve or deny the agent's waiting commands.", no_args_is_help=True)

IdArgument = typer.Argument(..., help="The request's id, as `operator approvals list` shows.")


def approver() -> str:
    """Who decides from this terminal: the login name, and the machine."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@app.command("list")
def list_(
    ctx: typer.Context,
    every: bool = typer.Option(False, "--all", help="Decided requests too, not only pending."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """Commands waiting for a decision (with --all, the decided ones too), newest first."""
    status = None if every else ApprovalStatus.PENDING
    found = app_context(ctx).store.approvals(status, limit=limit)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("No commands wait for a decision." if not every else "No requests.")
        return
    rows = table("id", "status", "ticket", "session", "verdict", "command", "asked")
    for a in found:
        rows.add_row(str(a.id), styled(a.status), f"#{a.ticket_id}", str(a.session_id),
                     a.verdict, shown(a.command), when(a.requested_at, short=True))  # fmt: skip
    console.print(rows)


@app.command()
def show(ctx: typer.Context, approval_id: int = IdArgument, as_json: bool = JsonOption) -> None:
    """One request: the command, the agent's reasoning, why it waits, and the decision."""
    approval = app_context(ctx).store.approval(approval_id)
    if as_json:
        print_json(approval)
        return
    console.print(panel(approval))


def print_pending(found: list[Approval]) -> None:
    """The requests among ``found`` that still wait, each with how to decide it."""
    for approval in (a for a in reversed(found) if a.pending):
        console.print(panel(approval))


def panel(a: Approval) -> Panel:
    decided = (
        f"\n[bold]decision:[/] {styled(a.status)} by {shown(a.decided_by or '-')} at "
        f"{when(a.decided_at)}" + (f": {shown(a.reason)}" if a.reason else "")
        if not a.pending
        else f"\n[bold]decision:[/] {styled(a.status)}: `operator approvals approve {a.id}` "
        f"or `operator approvals deny {a.id} --reason TEXT`"
    )
    body = (
        f"[bold cyan]$ {shown(a.command, fold=False)}[/]\n"
        f"[bold]reasoning:[/] {shown(a.reasoning) or '-'}\n"
        f"[bold]classifier:[/] {a.verdict}: {shown(a.verdict_why)} (mode {a.mode})\n"
        f"[bold]ticket[/] #{a.ticket_id} · session {a.session_id} · asked {when(a.requested_at)}"
        f" · sha256 {a.command_sha256[:16]}…{decided}"
    )
    return Panel(body, title=f"approval #{a.id}", title_align="left")


@app.command()
def approve(
    ctx: typer.Context,
    approval_id: int = IdArgument,
    note: str = typer.Option("", "--note", help="Why, for the audit trail."),
    as_json: bool = JsonOption,
) -> None:
    """Let the command run, exactly as shown by `approvals show`."""
    decided = app_context(ctx).store.decide_approval(
        approval_id, ApprovalStatus.APPROVED, approver(), note
    )
    _said(decided, as_json)


@app.command()
def deny(
    ctx: typer.Context,
    approval_id: int = IdArgument,
    reason: str = typer.Option(..., "--reason", help="Why: the agent reads it and tries again."),
    as_json: bool = JsonOption,
) -> None:
    """Refuse the command: it never runs, and the agent is told your reason."""
    if not reason.strip():
        raise UsageError("--reason must say why", hint="The agent reads it to choose another way.")
    decided = app_context(ctx).store.decide_approval(
        approval_id, ApprovalStatus.DENIED, approver(), reason
    )
    _said(decided, as_json)


def _said(approval: Approval, as_json: bool) -> None:
    if as_json:
        print_json(approval)
    else:
        console.print(
            f"approval #{approval.id} {styled(approval.status)}: {shown(approval.command)}"
        )
