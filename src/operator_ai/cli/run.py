"""`operator run`: the lab, load, monitor and agent in one process, on one screen."""

from __future__ import annotations

import contextlib
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator

import typer
from rich.live import Live

from operator_ai.approval.gate import NEVER
from operator_ai.cli.approvals import approver
from operator_ai.cli.context import ApprovalOption, app_context, approval_mode, stop_on_signals
from operator_ai.cli.lab import up_lab
from operator_ai.cli.output import console, err_console, progress
from operator_ai.errors import OperatorError
from operator_ai.lab import Lab, LabDir
from operator_ai.lab import injections as chaos
from operator_ai.lab.injections import Injections
from operator_ai.lab.load import DEFAULT_RATE
from operator_ai.models.spec import load_model
from operator_ai.run import AGENT_EVENTS, Event, Runner, victim
from operator_ai.store import ApprovalStatus
from operator_ai.tui.dashboard import screen
from operator_ai.tui.text import shown
from operator_ai.tui.transcript import describe

KEYS = "[bold]k[/] kill a node · [bold]r[/] revert faults · [bold]q[/] quit"
APPROVAL_KEYS = " · [bold]a[/]/[bold]d[/] approve/deny the oldest waiting command"


def run(
    ctx: typer.Context,
    subject: str = typer.Argument(..., help="What to run, e.g. etcd (`operator subjects list`)."),
    model: str | None = typer.Option(
        None, "--model", help="The agent's model (default OPERATOR_MODEL); none: no remediation."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Agent workers."),
    rate: float = typer.Option(DEFAULT_RATE, "--rate", help="Load, in requests per second."),
    lab_name: str | None = typer.Option(None, "--lab", help="Lab name (default: the subject)."),
    down: bool = typer.Option(False, "--down", help="Take the lab down on exit."),
    no_ui: bool = typer.Option(False, "--no-ui", help="Print transitions and agent steps."),
    approval: str | None = ApprovalOption,
) -> None:
    """Bring the lab up if needed, then run load, monitor and agent workers with a live
    dashboard. Inject faults with the keys shown, or `operator chaos inject` elsewhere."""
    context = app_context(ctx)
    settings = context.settings
    spec = model or settings.model
    if spec:
        load_model(spec, settings).close()  # a bad spec or key fails now
    lab = Lab(LabDir(settings.home, lab_name or subject))
    up_lab(ctx, lab, subject)
    runner = Runner(settings, context.store, lab, model=spec, workers=workers, rate=rate,
                    approval=approval_mode(ctx, approval),
                    on_event=_print if no_ui else lambda e: None)  # fmt: skip
    stop = stop_on_signals()
    if not spec:
        err_console.print("[yellow]no model configured:[/] tickets open, nobody repairs them "
                          "(see `operator agent run --help` for --model)")  # fmt: skip
    runner.start()
    try:
        if no_ui or not sys.stdin.isatty():
            err_console.print(f"run: {subject} in lab {lab.dir.name}; Ctrl-C stops")
            stop.wait()
        else:
            _dashboard(runner, stop)
    finally:
        err_console.print("run: stopping the load, the monitor and the agent…")
        runner.stop()
        if down:
            lab.down(progress)


def _print(event: Event) -> None:
    data = event.data
    if event.kind in AGENT_EVENTS or "ticket" not in data:  # an agent step, or an error
        console.print(describe(event), soft_wrap=True)
    else:
        line = f"#{data['ticket']} {shown(data['key'])}: {shown(data['message'])}"
        at = f"[dim]{event.at.astimezone():%H:%M:%S}[/]"
        console.print(f"{at} [bold]{event.kind}[/] {line}", soft_wrap=True)


def _dashboard(runner: Runner, stop: threading.Event) -> None:
    keys = KEYS + (APPROVAL_KEYS if runner.approval != NEVER else "")
    with _keys() as read, Live(screen(runner, keys), console=console, screen=True) as live:
        while not stop.is_set():
            key = read(0.5)
            try:
                if key == "q":
                    stop.set()
                elif key == "k":
                    chaos.inject(runner.lab, "kill", victim(runner.lab), {})
                elif key == "r":
                    for injection in Injections(runner.lab.path).active():
                        chaos.revert(runner.lab, injection.id)
                elif key in ("a", "d") and runner.approval != NEVER:
                    _decide(runner, approve=key == "a")
            except OperatorError as exc:
                runner.emit("error", {"message": str(exc)})
            live.update(screen(runner, keys))


def _decide(runner: Runner, approve: bool) -> None:
    """Approve or deny the oldest command of this run that waits: the one shown whole."""
    waiting = runner.waiting()
    if not waiting:
        return
    oldest, by = waiting[0], approver()
    if approve:
        runner.store.decide_approval(oldest.id, ApprovalStatus.APPROVED, by, "from the dashboard")
    else:
        runner.store.decide_approval(oldest.id, ApprovalStatus.DENIED, by,
                                     "denied from the dashboard: try another way")  # fmt: skip


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """Single key presses from the terminal, without echo, for as long as the screen runs."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return sys.stdin.read(1) if ready else None

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
