"""`operator audit`: agent sessions as readable transcripts, and the chain's integrity."""

from __future__ import annotations

import io

import typer
from rich.console import Console
from rich.table import Table

from operator_ai.cli.approvals import print_pending
from operator_ai.cli.context import app_context
from operator_ai.cli.output import (
    JsonOption,
    console,
    plain,
    print_json,
    table,
    when,
)
from operator_ai.store import ApprovalStatus, AuditEntry, AuditKind, Session, Store
from operator_ai.tui.text import shown, styled

app = typer.Typer(help="Read agent sessions and check the audit trail.", no_args_is_help=True)

FOLD_LINES = 6


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """List agent sessions, newest first."""
    sessions = app_context(ctx).store.sessions(limit=limit)
    if as_json:
        print_json(sessions)
        return
    console.print(sessions_table(sessions) if sessions else "No agent sessions yet.")


def sessions_table(sessions: list[Session], title: str | None = None) -> Table:
    """Agent sessions, one row each: who worked, with what model, how it ended, at what cost."""
    rows = table(
        "id",
        "ticket",
        "worker",
        "model",
        "started",
        "outcome",
        "steps",
        "tokens in/out",
        "cost",
        title=title,
    )
    for s in sessions:
        rows.add_row(
            str(s.id),
            str(s.ticket_id),
            shown(s.worker),
            shown(s.model or "-"),
            when(s.started_at, short=True),
            styled(s.outcome or "running"),
            str(s.steps),
            f"{s.tokens_in}/{s.tokens_out}",
            f"${s.cost_usd:.4f}",
        )
    return rows


@app.command("show")
def show(
    ctx: typer.Context,
    session_id: int = typer.Argument(..., help="Session id, as shown by `operator audit list`."),
    full: bool = typer.Option(False, "--full", help="Print every output whole, unfolded."),
    as_json: bool = JsonOption,
) -> None:
    """Print a session as a transcript: reasoning, commands with exit codes, outputs folded."""
    store = app_context(ctx).store
    session = store.session(session_id)
    entries = store.audit_entries(session_id)
    waiting = store.approvals(ApprovalStatus.PENDING, session_id=session_id)
    if as_json:
        print_json({"session": session, "entries": entries, "pending_approvals": waiting})
        return
    _print_session(console, store, session_id, full)
    print_pending(waiting)


def _print_session(out: Console, store: Store, session_id: int, full: bool) -> None:
    session = store.session(session_id)
    out.print(
        f"[bold]session {session.id}[/] on ticket {session.ticket_id}"
        f" · worker {shown(session.worker)} · model {shown(session.model or '-')}"
        f" · {styled(session.outcome or 'running')}"
    )
    for entry in store.audit_entries(session_id):
        out.print(_render(entry, full))
    if session.summary:
        out.print(f"\n[bold]summary:[/] {shown(session.summary)}")


def transcript_text(store: Store, session_ids: list[int]) -> str:
    """Sessions as `operator audit show --full` prints them, as plain text."""
    out = Console(record=True, file=io.StringIO(), width=120, highlight=False)
    for session_id in session_ids:
        _print_session(out, store, session_id, full=True)
        out.print()
    return out.export_text()


def _render(entry: AuditEntry, full: bool) -> str:
    head = f"[dim]{entry.seq:>3} {when(entry.at)}[/] "
    body = shown(entry.content, not full)
    if entry.kind == AuditKind.REASONING:
        return head + f"[italic]{body}[/]"
    if entry.kind == AuditKind.TOOL_CALL:
        command = (entry.params or {}).get("command", entry.content)
        why = (entry.params or {}).get("reasoning")
        by = "[yellow](platform)[/] " if (entry.params or {}).get("by") == "platform" else ""
        return (
            head
            + by
            + f"[bold cyan]$ {shown(str(command), not full)}[/]"
            + (f"\n      [dim]# {shown(str(why), not full)}[/]" if why else "")
        )
    if entry.kind == AuditKind.TOOL_RESULT:
        code = entry.exit_code
        mark = "[green]exit 0[/]" if code == 0 else f"[red]exit {code}[/]"
        took = f" in {entry.duration_ms / 1000:.1f} s" if entry.duration_ms is not None else ""
        return head + mark + took + "\n" + _indent(_fold(entry.content, full))
    label = "[bold magenta]verification[/]" if entry.kind == AuditKind.VERIFICATION else "note"
    return head + f"{label}: {body}"


def _fold(text: str, full: bool) -> str:
    lines = text.splitlines()
    if full or len(lines) <= 2 * FOLD_LINES:
        return shown(text, not full)
    hidden = len(lines) - 2 * FOLD_LINES
    marker = f"[dim]… {hidden} lines folded (--full shows them) …[/]"
    head, tail = shown("\n".join(lines[:FOLD_LINES])), shown("\n".join(lines[-FOLD_LINES:]))
    return f"{head}\n{marker}\n{tail}"


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())


@app.command("verify")
def verify(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Check the audit hash chain; exit non-zero naming the first entry that fails."""
    result = app_context(ctx).store.verify_audit()
    if as_json:
        print_json({"ok": result.ok, **plain(result)})
    elif result.ok:
        console.print(f"[green]audit trail intact[/]: {result.checked} entries verified")
    else:
        where = (
            f"entry {result.bad_entry} (session {result.session_id}, #{result.seq})"
            if result.bad_entry
            else "the chain's end"
        )
        console.print(f"[red]audit trail tampered[/] at {where}: {result.reason}")
    if not result.ok:
        raise typer.Exit(1)
