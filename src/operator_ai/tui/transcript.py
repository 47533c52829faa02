"""Agent events as transcript lines, for `operator agent run`, `operator run` and the demo."""

from __future__ import annotations

from operator_ai.run import Event
from operator_ai.tui.text import shown, styled


def describe(event: Event) -> str:
    """An agent event as one line of the transcript."""
    data, at = event.data, f"[dim]{event.at.astimezone():%H:%M:%S}[/]"
    if "worker" in data:
        at += f" [dim]{data['worker']}[/]"
    if event.kind == "claimed":
        return f"{at} [bold]claimed #{data['ticket']}[/] {shown(str(data['key']))}"
    if event.kind == "snapshot":
        took = f"{int(str(data['ms'])) / 1000:.1f} s"
        return f"{at} [dim]the platform ran {data['commands']} diagnostic commands in {took}[/]"
    if event.kind == "news":
        return f"{at} [magenta]told the model:[/] {shown(first_line(str(data['text'])))}"
    if event.kind == "reasoning":
        return f"{at} [italic]{shown(first_line(str(data['text'])))}[/]"
    if event.kind == "command":
        return f"{at} [bold cyan]$ {shown(str(data['command']))}[/]"
    if event.kind == "result":
        code = data["exit_code"]
        mark = "[green]exit 0[/]" if code == 0 else f"[red]exit {code}[/]"
        return f"{at}   {mark} {shown(first_line(str(data['output'])))}"
    if event.kind == "approval":
        command = shown(str(data["command"]))
        return f"{at} [bold yellow]waiting for approval #{data['approval']}:[/] [cyan]{command}[/]"
    if event.kind == "decided":
        reason = f": {shown(str(data['reason']))}" if data.get("reason") else ""
        return f"{at} approval #{data['approval']} {styled(str(data['status']))}{reason}"
    if event.kind == "unverified":
        return f"{at} [yellow]not verified yet:[/] {shown(str(data['message']))}"
    if event.kind == "ended":
        return f"{at} {styled(str(data['outcome']))}: {shown(str(data['reason']))}"
    return f"{at} [red]{event.kind}:[/] {shown(str(data.get('message')))}"


def first_line(text: str, width: int = 100) -> str:
    line = next((s for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"
