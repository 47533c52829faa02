"""`operator lab`: start a real cluster on this machine, look at it, load it, stop it."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

import typer

from operator_ai import plugins
from operator_ai.cli.context import LabOption, app_context, open_lab, stop_on_signals
from operator_ai.cli.output import (
    JsonLinesOption,
    JsonOption,
    console,
    err_console,
    print_json,
    print_json_line,
    progress,
    table,
)
from operator_ai.core import DOCKER, LOOPBACK, MODES, NETNS, PROCESS, RUNNING, RUNTIMES
from operator_ai.errors import LabError, SubjectUnreachable, UsageError
from operator_ai.lab import Lab, LabDir, docker
from operator_ai.lab.injections import Injections
from operator_ai.lab.load import DEFAULT_RATE
from operator_ai.tui.text import shown

app = typer.Typer(help="Start, inspect, load and stop lab clusters.", no_args_is_help=True)


@app.command()
def up(
    ctx: typer.Context,
    subject: str = typer.Argument(..., help="What to run, e.g. etcd (`operator subjects list`)."),
    nodes: int | None = typer.Option(
        None, "--nodes", help="How many nodes (default: the subject's)."
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help=f"{NETNS} (root; the default as root) or {LOOPBACK} (no root, fewer faults).",
    ),
    lab_name: str | None = typer.Option(
        None, "--lab", help="The lab's name (default: the subject's)."
    ),
    runtime: str | None = typer.Option(
        None,
        "--runtime",
        help=f"{PROCESS} (nodes under supervisord; etcd, ratelimiter) or {DOCKER} (Docker "
        "Compose; tikv). Default: the subject's own.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Start a lab cluster, or show it if it is already up."""
    if mode not in (None, *MODES):
        raise UsageError(f"--mode must be {' or '.join(MODES)}, not {mode!r}",
                         hint="netns needs root; loopback runs as you, fewer faults.")  # fmt: skip
    if runtime not in (None, *RUNTIMES):
        raise UsageError(f"--runtime must be {' or '.join(RUNTIMES)}, not {runtime!r}",
                         hint="Leave it out to use the subject's own runtime.")  # fmt: skip
    if runtime == DOCKER and mode:
        raise UsageError("--mode applies to the process runtime only",
                         hint="Drop --mode when you pass --runtime docker.")  # fmt: skip
    lab = Lab(LabDir(app_context(ctx).settings.home, lab_name or subject))
    up_lab(ctx, lab, subject, nodes, mode, runtime)
    print_status(lab, as_json)


def up_lab(
    ctx: typer.Context,
    lab: Lab,
    subject: str,
    nodes: int | None = None,
    mode: str | None = None,
    runtime: str | None = None,
) -> None:
    """Bring ``lab`` up (or find it up) with the user's settings, saying so when it is a
    loopback lab, which isolates less."""
    plugin = plugins.load_subject(subject)
    state = lab.up(plugin, nodes or plugin.default_nodes, mode, app_context(ctx).settings.lab_user,
                   progress, runtime)  # fmt: skip
    if state.mode == LOOPBACK:
        err_console.print(
            "[yellow]loopback mode:[/] nodes share the host's network and run as you; "
            "network faults are unavailable and the sandbox isolates less."
        )


@app.command()
def status(
    ctx: typer.Context, lab_name: str | None = LabOption, as_json: bool = JsonOption
) -> None:
    """Nodes, addresses, PIDs, state, leader and active faults."""
    print_status(open_lab(ctx, lab_name), as_json)


def _status(lab: Lab) -> dict[str, Any]:
    state = lab.state
    running = lab.running()
    processes = {p.name: p for p in lab.control.statuses()} if running else {}
    observed: dict[str, Any] = {}
    leader = error = None
    if running:
        try:
            observation = lab.observe(timeout=2.0)
            observed, leader = observation.nodes, lab.subject.leader(observation)
        except SubjectUnreachable as exc:
            error = str(exc)
    nodes = []
    for node in state.nodes:
        process = processes.get(node.name)
        seen = observed.get(node.name, {})
        nodes.append(
            {
                "name": node.name,
                "address": f"{node.address}:{next(iter(node.ports.values()))}",
                "netns": node.netns,
                "pid": process.pid if process else None,
                "state": process.state if process else "unknown" if running else "lab down",
                "role": _role(node.name, leader, seen),
                "healthy": seen.get("healthy"),
                "error": seen.get("error"),
            }
        )  # fmt: skip
    return {
        "lab": state.name,
        "subject": state.subject,
        "mode": state.mode,
        "path": str(lab.path),
        "subnet": state.subnet,
        "host_address": state.host_address,
        "ops_netns": state.ops_netns,
        "supervisor": {
            "pid": state.supervisor_pid,
            "door_pid": state.door_pid,
            "running": running,
        },
        "leader": leader,
        "nodes": nodes,
        "faults": Injections(lab.path).active(),
        "error": error,
    }


def _role(name: str, leader: str | None, seen: dict[str, Any]) -> str | None:
    """The leader, else the role the subject saw (a replica, a sentinel), else a follower."""
    if name == leader:
        return "leader"
    if seen.get("role"):
        return str(seen["role"])
    return "follower" if leader and seen.get("reachable") else None


def print_status(lab: Lab, as_json: bool) -> None:
    status = _status(lab)
    if as_json:
        print_json(status)
        return
    where = f", subnet {status['subnet']}" if status["subnet"] else ""
    runner = (
        f"compose project {lab.state.prefix}"
        if status["mode"] == DOCKER
        else f"supervisord {status['supervisor']['pid']} (door {status['supervisor']['door_pid']})"
    )
    console.print(
        f"[bold]{status['lab']}[/]: {status['subject']} in {status['mode']} mode{where}; "
        f"{runner} "
        + ("[green]running[/]" if status["supervisor"]["running"] else "[red]not running[/]")
    )
    nodes = table("node", "address", "pid", "state", "role", "health", caption=None)
    for n in status["nodes"]:
        health = {True: "[green]healthy[/]", False: "[red]unhealthy[/]"}.get(n["healthy"], "-")
        if n["error"]:
            health = f"[red]{shown(n['error'])}[/]"
        state = n["state"] if n["state"] == RUNNING else f"[red]{n['state']}[/]"
        role = f"[bold]{n['role']}[/]" if n["role"] == "leader" else (n["role"] or "-")
        nodes.add_row(n["name"], n["address"], str(n["pid"] or "-"), state, role, health)
    console.print(nodes)
    if status["error"]:
        console.print(f"[red]observation failed:[/] {shown(status['error'])}")
    if status["faults"]:
        faults = table("id", "fault", "target", "params", "since", caption="active faults (UTC)")
        for f in status["faults"]:
            params = " ".join(f"{k}={v}" for k, v in f.params.items()) or "-"
            faults.add_row(str(f.id), f.fault, f.target, params, f.injected_at[11:19])
        console.print(faults)


@app.command()
def logs(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="The node, e.g. etcd1."),
    lines: int = typer.Option(50, "-n", "--lines", help="How many lines from the end."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
    lab_name: str | None = LabOption,
) -> None:
    """Print a node's log (its stdout and stderr)."""
    lab = open_lab(ctx, lab_name)
    if lab.state.mode == DOCKER:
        container = docker.container(lab.state.prefix, lab.state.node(node).name)
        argv = ["docker", "logs", "--tail", str(lines), *(["--follow"] if follow else []),
                container]  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(argv, check=False)
        return
    path = lab.path / "logs" / f"{lab.state.node(node).name}.log"
    if not path.exists():
        raise LabError(f"{node} has no log yet ({path})")
    argv = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(path)]
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(argv, check=False)


@app.command()
def down(ctx: typer.Context, lab_name: str | None = LabOption, as_json: bool = JsonOption) -> None:
    """Stop a lab and remove its processes, namespaces and mounts (safe to repeat)."""
    lab = open_lab(ctx, lab_name)
    removed = lab.down(progress)
    if as_json:
        print_json({"lab": lab.dir.name, "removed": removed})
    else:
        console.print(
            f"lab {lab.dir.name} is down" + (f" ({len(removed)} things removed)" if removed else "")
        )


@app.command()
def reset(ctx: typer.Context, lab_name: str | None = LabOption, as_json: bool = JsonOption) -> None:
    """Stop the lab, wipe its data, logs and fault history, and start it afresh."""
    lab = open_lab(ctx, lab_name)
    state, subject = lab.state, lab.subject
    lab.down(progress)
    lab.wipe()
    lab.up(subject, len(state.nodes), state.mode, state.user, progress)
    print_status(lab, as_json)


@app.command()
def load(
    ctx: typer.Context,
    lab_name: str | None = LabOption,
    rate: float = typer.Option(DEFAULT_RATE, "--rate", help="Requests per second."),
    duration: float | None = typer.Option(None, "--duration", help="Stop after S seconds."),
    as_json: bool = JsonLinesOption,
) -> None:
    """Drive client load at a steady rate, until Ctrl-C or --duration; stats go to the lab's
    load.json every second."""
    if rate <= 0:
        raise UsageError("--rate must be positive", hint="e.g. --rate 50 (operations per second)")
    lab = open_lab(ctx, lab_name)

    def report(stats: dict[str, Any]) -> None:
        if as_json:
            print_json_line({k: v for k, v in stats.items() if k != "series"})
            return
        window = stats["window"]
        err_console.print(
            f"[dim]load:[/] {stats['ops']} ops, {stats['errors']} errors; last "
            f"{window['seconds']} s: {window['ops']} ops, {window['errors']} errors, "
            f"p99 {window['p99_ms'] or '-'} ms",
            highlight=False,
        )

    err_console.print(f"load: {rate:g} ops/s on {lab.dir.name}; Ctrl-C stops")
    lab.subject.load(lab.cluster, rate, duration, report, stop_on_signals())
