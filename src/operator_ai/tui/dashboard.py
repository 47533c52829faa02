"""The live screen of `operator run`: cluster, workload, tickets, the agent, faults."""

from __future__ import annotations

from datetime import datetime

from rich.console import RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table

from operator_ai.approval.gate import NEVER
from operator_ai.core import Injection
from operator_ai.lab.injections import Injections
from operator_ai.lab.load import read_workload
from operator_ai.run import AGENT_EVENTS, Runner
from operator_ai.store import Ticket
from operator_ai.tui.text import shown, styled
from operator_ai.tui.transcript import describe

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    values = values[-width:]
    top = max(values, default=0) or 1
    return "".join(BARS[min(len(BARS) - 1, round(v / top * (len(BARS) - 1)))] for v in values)


def cluster(runner: Runner) -> RenderableType:
    observation = runner.monitor.last
    rows = Table.grid(padding=(0, 2))
    if observation is None:
        return Panel(runner.monitor.last_error or "observing…", title="cluster")
    leader = runner.lab.subject.leader(observation)
    for name, seen in observation.nodes.items():
        if not seen.get("reachable"):
            state = "[bold red]down[/]"
        elif seen.get("healthy") is False:
            state = "[yellow]unhealthy[/]"
        else:
            state = "[green]healthy[/]"
        role = "[bold]leader[/]" if name == leader else ""
        rows.add_row(name, shown(str(seen.get("address", ""))), state, role)
    title = f"cluster: {runner.lab.state.subject} ({runner.lab.state.mode})"
    return Panel(rows, title=title, subtitle=runner.monitor.last_error or None)


def workload(runner: Runner) -> RenderableType:
    stats = read_workload(runner.lab.path)
    if stats is None:
        return Panel("no load running", title="workload")
    series = stats.get("series", [])
    ops = [float(s["ops"]) for s in series]
    errors = [float(s["errors"]) for s in series]
    window = stats["window"]
    text = (
        f"ops/s    [cyan]{sparkline(ops)}[/] {ops[-1] if ops else 0:.0f}\n"
        f"errors/s [red]{sparkline(errors)}[/] {errors[-1] if errors else 0:.0f}\n"
        f"p99 {window.get('p99_ms') or '-'} ms over the last {window['seconds']} s"
    )
    return Panel(text, title="workload")


def tickets(runner: Runner) -> RenderableType:
    injections = Injections(runner.lab.path).all()
    rows = Table("#", "key", "status", "time to detect", box=None, pad_edge=False)
    scope = runner.monitor.scope  # this lab's tickets only
    live = runner.store.live(scope=scope)[::-1]  # open, working and escalated first, newest on top
    live_ids = {t.id for t in live}
    ended = [t for t in runner.store.tickets(limit=6, scope=scope) if t.id not in live_ids]
    for ticket in [*live, *ended][:6]:
        rows.add_row(str(ticket.id), shown(ticket.key), styled(ticket.status),
                     f"{time_to_detect(ticket, injections):.1f} s")  # fmt: skip
    return Panel(rows, title="tickets (live first)")


def time_to_detect(ticket: Ticket, injections: list[Injection]) -> float:
    """From the latest fault on the ticket's target before it opened, when there is one;
    otherwise from the monitor's first sighting."""
    started = [
        at for i in injections if i.target == ticket.target
        and (at := datetime.fromisoformat(i.injected_at)) <= ticket.opened_at
    ]  # fmt: skip
    if not started:
        return ticket.time_to_detect
    return (ticket.opened_at - max(started)).total_seconds()


def faults(runner: Runner) -> RenderableType:
    active = Injections(runner.lab.path).active()
    lines = [f"#{i.id} {i.fault} on {shown(i.target)} since {i.injected_at[11:19]}" for i in active]
    return Panel("\n".join(lines) or "none", title="active faults")


def approvals(runner: Runner) -> RenderableType:
    waiting = runner.waiting()
    if not waiting:
        return Panel("none waiting", title=f"approvals ({runner.approval})")
    first, *rest = waiting  # the one a and d decide, shown whole
    lines = [f"a/d decide #{first.id} ({first.verdict}):", f"[cyan]{shown(first.command)}[/]"]
    lines += [f"then #{a.id} {shown(a.command.splitlines()[0])}" for a in rest]
    return Panel("\n".join(lines), title=f"approvals ({runner.approval})")


def transcript(runner: Runner, height: int) -> RenderableType:
    if not runner.model:
        return Panel(
            "No model configured: detection runs, remediation does not.\n"
            "Set ANTHROPIC_API_KEY and pass --model anthropic:claude-sonnet-5-5, or "
            "OPENAI_API_KEY and --model openai:gpt-4.1, or a local server with "
            "--model openai:NAME@http://HOST:PORT/v1, or --model scripted:PATH.yaml.",
            title="agent",
        )
    lines = [describe(e) for e in runner.events if e.kind in AGENT_EVENTS]
    return Panel("\n".join(lines[-height:]) or "waiting for a ticket…", title="agent")


def screen(runner: Runner, keys: str) -> RenderableType:
    layout = Layout()
    layout.split_column(
        Layout(f"[bold]Operator[/] · {datetime.now():%H:%M:%S} · {keys}", size=1),
        Layout(name="top", size=9),
        Layout(name="middle", size=9),
        Layout(name="agent"),
    )
    layout["top"].split_row(Layout(cluster(runner)), Layout(workload(runner)))
    middle = [Layout(tickets(runner), ratio=2), Layout(faults(runner))]
    if runner.approval != NEVER:
        middle.append(Layout(approvals(runner), ratio=2))
    layout["middle"].split_row(*middle)
    layout["agent"].update(transcript(runner, 14))
    return layout
