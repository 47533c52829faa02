"""`operator tickets`: the queue of violations, their timelines, and human overrides."""

from __future__ import annotations

import json
from collections.abc import Callable

import typer
from rich.panel import Panel

from operator_ai.cli.approvals import print_pending
from operator_ai.cli.audit import sessions_table
from operator_ai.cli.context import app_context
from operator_ai.cli.output import JsonOption, console, print_json, table, when
from operator_ai.store import ApprovalStatus, Status, Store, Ticket
from operator_ai.tui.text import shown, styled

app = typer.Typer(help="List, inspect and override tickets.", no_args_is_help=True)

IdArgument = typer.Argument(..., help="Ticket id, as shown by `operator tickets list`.")


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Status | None = typer.Option(None, "--status", help="Only tickets in this status."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, newest first."),
    scope: str | None = typer.Option(
        None, "--scope", help="Only one lab's tickets (its name), or an eval trial's."
    ),
    as_json: bool = JsonOption,
) -> None:
    """List tickets, newest first."""
    found = app_context(ctx).store.tickets(status, limit, scope)
    if as_json:
        print_json(found)
        return
    rows = table("id", "incident", "status", "key", "scope", "severity", "message", "opened",
                 "seen", "reopened")  # fmt: skip
    for t in found:
        status_text = styled(t.status) + (" [cyan](held)[/]" if t.held else "")
        rows.add_row(
            str(t.id),
            f"#{t.incident_id}" if t.incident_id else "",
            status_text,
            shown(t.key),
            shown(t.scope),
            t.severity,
            shown(t.message),
            when(t.opened_at, short=True),
            f"{t.occurrences}x",
            str(t.times_reopened),
        )
    console.print(rows if found else "No tickets.")


@app.command("show")
def show(ctx: typer.Context, ticket_id: int = IdArgument, as_json: bool = JsonOption) -> None:
    """Show one ticket: what the monitor saw, its incident, its timeline and its agent
    sessions."""
    store = app_context(ctx).store
    ticket = store.ticket(ticket_id)
    events, sessions = store.events(ticket_id), store.sessions(ticket_id)
    incident = store.incident(ticket.incident_id) if ticket.incident_id else [ticket]
    waiting = store.approvals(ApprovalStatus.PENDING, ticket_id=ticket_id)
    if as_json:
        print_json({"ticket": ticket, "incident": incident, "timeline": events,
                    "sessions": sessions, "pending_approvals": waiting})  # fmt: skip
        return
    console.print(_ticket_panel(ticket))
    if len(incident) > 1:
        together = table("id", "status", "by", "key", "opened", "message",
                         title=f"Incident #{ticket.incident_id}")  # fmt: skip
        for t in incident:
            together.add_row(str(t.id), styled(t.status), shown(t.resolved_by or ""), shown(t.key),
                             when(t.opened_at), shown(t.message))  # fmt: skip
        console.print(together)
    timeline = table("at", "event", "actor", "detail", "session", title="Timeline")
    for e in events:
        timeline.add_row(
            when(e.at), e.kind, shown(e.actor), shown(e.detail), str(e.session_id or "")
        )
    console.print(timeline)
    if sessions:
        console.print(sessions_table(sessions, title="Agent sessions"))
    print_pending(waiting)


def _ticket_panel(t: Ticket) -> Panel:
    lines = [
        f"[bold]{shown(t.key)}[/]  {styled(t.status)}{'  [cyan]held[/]' if t.held else ''}"
        f"  severity {t.severity}  scope {shown(t.scope)}",
        shown(t.message),
        f"first seen {when(t.first_seen_at)}  opened {when(t.opened_at)}"
        f"  (detected after {t.time_to_detect:.1f} s)  last seen {when(t.last_seen_at)}",
        f"seen {t.occurrences}x, reopened {t.times_reopened}x",
    ]
    if t.claimed_by:
        lines.append(f"claimed by {shown(t.claimed_by)} until {when(t.lease_until)}")
    if t.resolved_at:
        lines.append(
            f"resolved {when(t.resolved_at)} by {t.resolved_by}: {shown(t.resolution or '')}"
        )
    if t.evidence:
        lines.append("evidence: " + shown(json.dumps(t.evidence, sort_keys=True, default=str)))
    return Panel("\n".join(lines), title=f"ticket {t.id}", expand=False)


def _transition(
    ctx: typer.Context, verb: str, action: Callable[[Store], Ticket], as_json: bool
) -> None:
    ticket = action(app_context(ctx).store)
    if as_json:
        print_json(ticket)
    else:
        console.print(
            f"ticket {ticket.id} {verb}: now {styled(ticket.status)}"
            + (" (held)" if ticket.held else "")
        )


@app.command("hold")
def hold(ctx: typer.Context, ticket_id: int = IdArgument, as_json: bool = JsonOption) -> None:
    """Keep agents off a ticket; a working agent is stopped and its session interrupted."""
    _transition(ctx, "held", lambda s: s.hold(ticket_id), as_json)


@app.command("unhold")
def unhold(ctx: typer.Context, ticket_id: int = IdArgument, as_json: bool = JsonOption) -> None:
    """Let agents claim a held ticket again."""
    _transition(ctx, "unheld", lambda s: s.unhold(ticket_id), as_json)


@app.command("reopen")
def reopen(ctx: typer.Context, ticket_id: int = IdArgument, as_json: bool = JsonOption) -> None:
    """Put a resolved or escalated ticket back in the queue."""
    _transition(ctx, "reopened", lambda s: s.reopen(ticket_id), as_json)


@app.command("resolve")
def resolve(
    ctx: typer.Context,
    ticket_id: int = IdArgument,
    note: str = typer.Option(..., "--note", help="What was done; kept as the resolution."),
    as_json: bool = JsonOption,
) -> None:
    """Resolve a ticket by hand, with a note saying what was done."""
    _transition(ctx, "resolved", lambda s: s.resolve(ticket_id, note), as_json)
