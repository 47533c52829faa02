"""`operator monitor`: watch a lab's subject and turn broken invariants into tickets."""

from __future__ import annotations

import typer

from operator_ai.cli.context import LabOption, app_context, open_lab, stop_on_signals
from operator_ai.cli.output import JsonLinesOption, console, err_console, print_json_line
from operator_ai.errors import UsageError
from operator_ai.monitor import Monitor, Transition
from operator_ai.tui.text import shown

app = typer.Typer(help="Watch a subject and open or clear tickets.", no_args_is_help=True)

COLOUR = {
    "opened": "bold red",
    "reopened": "bold red",
    "returned": "red",
    "cleared": "yellow",
    "resolved": "green",
}


@app.command()
def run(
    ctx: typer.Context,
    lab_name: str | None = LabOption,
    interval: float = typer.Option(1.0, "--interval", help="Seconds between observations."),
    once: bool = typer.Option(False, "--once", help="Observe once, reconcile, and exit."),
    as_json: bool = JsonLinesOption,
) -> None:
    """Observe a lab's cluster on a fixed cadence; print each ticket transition as it
    happens. Ctrl-C stops."""
    if interval <= 0:
        raise UsageError("--interval must be positive", hint="e.g. --interval 1 (seconds)")
    lab = open_lab(ctx, lab_name)
    subject = lab.subject.name
    monitor = Monitor(app_context(ctx).store, lab.subject, lab.cluster, interval=interval)
    stop = stop_on_signals()

    def show(t: Transition) -> None:
        if as_json:
            print_json_line({"at": t.at, "kind": t.kind, "ticket": t.ticket_id, "key": t.key,
                             "message": t.message})  # fmt: skip
        else:
            colour = COLOUR.get(t.kind, "bold")
            console.print(
                f"{t.at:%H:%M:%S} [{colour}]{t.kind:<8}[/] #{t.ticket_id} "
                f"{shown(t.key)}: {shown(t.message)}"
            )

    if not once:
        err_console.print(
            f"monitor: watching {subject} in lab {lab.dir.name} every {interval:g} s; Ctrl-C stops"
        )
    monitor.run(show, stop, once=once)
    if once:
        # One look cannot outlast a grace period: say what was seen that is not a ticket yet.
        live = {t.key for t in monitor.store.live(scope=monitor.scope)}
        waiting = [v for v in monitor.seen if v.key not in live]
        if as_json:
            for v in waiting:
                grace = monitor.grace.get(v.invariant, 0)
                print_json_line({"kind": "seen", "key": v.key, "message": v.message,
                                 "grace_seconds": grace})  # fmt: skip
            return
        state = monitor.last_error or f"{len(live)} live tickets"
        console.print(f"observed {subject}: {state}")
        for v in waiting:
            grace = monitor.grace.get(v.invariant, 0)
            what = f"{shown(v.key)}: {shown(v.message)}"
            console.print(f"  seen, not a ticket until it lasts {grace:g} s: {what}")
