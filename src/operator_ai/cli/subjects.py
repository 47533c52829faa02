"""`operator subjects`: the systems Operator knows how to run, watch and break."""

from __future__ import annotations

import typer

from operator_ai import plugins
from operator_ai.cli.output import JsonOption, console, print_json, table
from operator_ai.lab.faults import GENERIC

app = typer.Typer(help="List the installed subject plugins.", no_args_is_help=True)


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """Installed subjects, with their invariants and their own faults."""
    subjects = [plugins.load_subject(name) for name in plugins.names(plugins.SUBJECTS)]
    if as_json:
        print_json(
            [
                {
                    "name": s.name,
                    "description": s.description,
                    "default_nodes": s.default_nodes,
                    "invariants": list(s.invariants),
                    "faults": sorted(s.faults()),
                    "generic_faults": sorted(GENERIC),
                }
                for s in subjects
            ]
        )
        return
    out = table("subject", "nodes", "invariants", "own faults", "description", caption=None)
    for s in subjects:
        out.add_row(
            s.name,
            str(s.default_nodes),
            ", ".join(i.name for i in s.invariants),
            ", ".join(sorted(s.faults())),
            s.description,
        )
    console.print(out)
