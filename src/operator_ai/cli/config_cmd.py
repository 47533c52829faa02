"""`operator config`: what settings are in effect, and where each came from."""

from __future__ import annotations

import typer

from operator_ai.cli.context import app_context
from operator_ai.cli.output import JsonOption, console, print_json, table

app = typer.Typer(help="Show Operator's settings.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Print the resolved settings, with secrets masked, and where each came from."""
    settings, sources = app_context(ctx).resolve()
    values = settings.public()
    if as_json:
        print_json({"settings": values, "sources": sources})
        return
    rows = table("setting", "value", "from", title="Operator settings", caption=None)
    for name, value in values.items():
        rows.add_row(name, "-" if value is None else str(value), sources[name])
    console.print(rows)
