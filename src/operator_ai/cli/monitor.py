"""`operator monitor`: watch a lab's subject and turn broken invariants into tickets."""

from __future__ import annotations

import json as _json
import signal
import threading
from types import FrameType

import typer

from operator_ai.cli.context import app_context
from operator_ai.cli.lab import open_lab
from operator_ai.cli.output import console, err_console, shown
from operator_ai.errors import LabError, UsageError
from operator_ai.monitor import Monitor, Transition

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
    subject: str = typer.Option(..., "--subject", help="The subject to watch, e.g. etcd."),
    lab_name: str | None = typer.Option(
        None, "--lab", help="The lab to watch (default: the subject's name)."
    ),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between observations."),
    once: bool = typer.Option(False, "--once", help="Observe once, reconcile, and exit."),
    json: bool = typer.Option(False, "--json", help="Print each transition as a JSON line."),
) -> None:
    """Observe on a fixed cadence; print each ticket transition as it happens."""
    if interval <= 0:
        raise UsageError("--interval must be positive", hint="e.g. --interval 1 (seconds)")
    lab = open_lab(ctx, lab_name or subject)
    if lab.state.subject != subject:
        raise LabError(f"lab {lab.dir.name!r} runs {lab.state.subject}, not {subject}")
    monitor = Monitor(app_context(ctx).store, lab, interval=interval)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def show(t: Transition) -> None:
        if json:
            print(_json.dumps({"at": t.at.isoformat(), "kind": t.kind, "ticket": t.ticket_id,
                               "key": t.key, "message": t.message}), flush=True)  # fmt: skip
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
        live = {t.key for t in monitor.store.live(subject)}
        waiting = [v for v in monitor.seen if v.key not in live]
        if json:
            for v in waiting:
                grace = monitor.grace.get(v.invariant, 0)
                seen = {"kind": "seen", "key": v.key, "message": v.message, "grace_seconds": grace}
                print(_json.dumps(seen))
            return
        state = monitor.last_error or f"{len(live)} live tickets"
        console.print(f"observed {subject}: {state}")
        for v in waiting:
            grace = monitor.grace.get(v.invariant, 0)
            what = f"{shown(v.key)}: {shown(v.message)}"
            console.print(f"  seen, not a ticket until it lasts {grace:g} s: {what}")
