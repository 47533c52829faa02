"""`operator chaos`: inject real faults into a lab, and revert them."""

from __future__ import annotations

import contextlib
import signal
import time

import typer

from operator_ai.cli.context import LabOption, app_context, open_lab, stop_on_signals
from operator_ai.cli.output import JsonOption, console, err_console, print_json, table
from operator_ai.core import NODE, Injection
from operator_ai.errors import LabError, UsageError
from operator_ai.lab import injections as chaos
from operator_ai.lab.injections import Injections
from operator_ai.lab.state import lab_names

app = typer.Typer(help="Inject faults into a lab and revert them.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    lab_name: str | None = LabOption,
    history: bool = typer.Option(False, "--history", help="Also show reverted injections."),
    as_json: bool = JsonOption,
) -> None:
    """The faults this lab can take, and its injections."""
    home = app_context(ctx).settings.home
    lab = open_lab(ctx, lab_name) if lab_name or lab_names(home) else None
    catalogue = chaos.catalogue(lab.subject if lab else None)
    injections = Injections(lab.path).all() if lab else []
    if not history:
        injections = [i for i in injections if i.active]
    mode = lab.state.mode if lab else None
    if as_json:
        print_json(
            {
                "faults": [
                    {"name": f.name, "description": f.description, "target": f.target,
                     "modes": list(f.modes), "params": {k: {"default": d, "help": h}
                                                        for k, (d, h) in f.params.items()},
                     "runs_here": mode is None or mode in f.modes}
                    for f in catalogue.values()
                ],
                "injections": injections,
            }
        )  # fmt: skip
        return
    out = table("fault", "target", "params", "description", caption=None)
    for f in catalogue.values():
        params = " ".join(f"{k}={d}" for k, (d, _) in f.params.items()) or "-"
        name = f.name
        if mode is not None and mode not in f.modes:
            name = f"[dim]{f.name} ({'/'.join(f.modes)} only)[/]"
        out.add_row(name, "NODE" if f.target == NODE else "cluster", params, f.description)
    console.print(out)
    if lab:
        _print_injections(injections, "injections" if history else "active faults")


def _print_injections(injections: list[Injection], title: str) -> None:
    if not injections:
        console.print(f"no {title}")
        return
    out = table("id", "fault", "target", "params", "injected", "reverted", title=title)
    for i in injections:
        params = " ".join(f"{k}={v}" for k, v in i.params.items()) or "-"
        reverted = (i.reverted_at or "")[11:23] or "[red]active[/]"
        out.add_row(str(i.id), i.fault, i.target, params, i.injected_at[11:23], reverted)
    console.print(out)


def _params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {pair!r} is not KEY=VALUE", hint="e.g. --param ms=200")
        params[key] = value
    return params


@app.command()
def inject(
    ctx: typer.Context,
    fault: str = typer.Argument(..., help="The fault (`operator chaos list`)."),
    target: str | None = typer.Option(
        None, "--target", "-t", help="A node, or `leader` / `follower`."
    ),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE, repeatable."),
    duration: float | None = typer.Option(
        None, "--duration", help="Revert after S seconds (Ctrl-C reverts early)."
    ),
    lab_name: str | None = LabOption,
    as_json: bool = JsonOption,
) -> None:
    """Inject a fault now; it stays until `chaos revert`, or for --duration seconds."""
    lab = open_lab(ctx, lab_name)
    injection = chaos.inject(lab, fault, target, _params(param))
    if as_json:
        print_json(injection)
    else:
        console.print(
            f"injected {injection.fault} on {injection.target} "
            f"(injection {injection.id}, at {injection.injected_at[11:23]} UTC)"
        )
    if duration is None:
        return
    stop = stop_on_signals(signal.SIGHUP)  # a killed terminal still reverts the fault
    try:
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0 and not stop.is_set():
            err_console.print(f"reverting in {left:4.0f} s", end="\r")
            stop.wait(min(1.0, left))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a revert is not cut short
            signal.signal(sig, signal.SIG_IGN)
        injection = chaos.revert(lab, injection.id)
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            err_console.print(f"reverted injection {injection.id}        ")


@app.command()
def revert(
    ctx: typer.Context,
    injection_id: int | None = typer.Argument(None, help="The injection's id."),
    all_: bool = typer.Option(False, "--all", help="Revert every active injection."),
    lab_name: str | None = LabOption,
    as_json: bool = JsonOption,
) -> None:
    """Undo an injected fault (or all of them)."""
    if (injection_id is None) == (not all_):
        raise LabError("give an injection id or --all", hint="`operator chaos list` shows them.")
    lab = open_lab(ctx, lab_name)
    ids = [i.id for i in Injections(lab.path).active()] if all_ else [injection_id or 0]
    reverted = [chaos.revert(lab, i) for i in ids]
    if as_json:
        print_json(reverted)
    elif not reverted:
        console.print("no active faults")
    else:
        for i in reverted:
            console.print(f"reverted injection {i.id}: {i.fault} on {i.target}")
