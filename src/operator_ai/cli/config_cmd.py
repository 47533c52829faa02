"""`operator config`: what settings are in effect, and where each came from."""

from __future__ import annotations

from pathlib import Path

import typer

from operator_ai.cli.context import app_context
from operator_ai.cli.output import JsonOption, console, err_console, print_json, table
from operator_ai.config import CONFIG_FILE, Settings

app = typer.Typer(help="Show Operator's settings.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Print the resolved settings, with secrets masked, and where each came from."""
    settings, sources = app_context(ctx).resolve()
    values = settings.public()
    exposed = readable_by_others(settings)
    if as_json:
        print_json({"settings": values, "sources": sources, "readable_by_others": exposed})
        return
    rows = table("setting", "value", "from", title="Operator settings", caption=None)
    for name, value in values.items():
        rows.add_row(name, "-" if value is None else str(value), sources[name])
    console.print(rows)
    for path in exposed:
        err_console.print(
            f"[yellow]warning:[/] {path} is readable by other users "
            f"(mode {Path(path).stat().st_mode & 0o777:o}); `chmod 600 {path}` fixes it"
        )


def readable_by_others(settings: Settings) -> list[str]:
    """The secret-holding files (config, SQLite store) that users other than the owner may
    read: API keys and the audit trail belong to the operator alone."""
    candidates = [settings.home / CONFIG_FILE]
    if settings.db.startswith("sqlite:///"):
        db = Path(settings.db.removeprefix("sqlite:///")).expanduser()
        candidates += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return [str(p) for p in candidates if p.is_file() and p.stat().st_mode & 0o044]
