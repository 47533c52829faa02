"""Printing: Rich for people, ``--json`` for scripts. Both come from the same records."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from enum import Enum
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from operator_ai.tui.text import shown

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")
JsonLinesOption = typer.Option(False, "--json", help="Print each event as one JSON line.")
"""Every command's ``--json``, as a parameter named ``as_json`` (not shadowing the module)."""


def plain(value: Any) -> Any:
    """A record (or a structure of them) as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def print_json(value: Any) -> None:
    # Plain print, not Rich: scripts need the exact bytes, never wrapped or styled.
    print(json.dumps(plain(value), indent=2, ensure_ascii=False))


def print_json_line(record: dict[str, Any]) -> None:
    """One event of a stream, as one JSON line, flushed at once for a reader at the pipe."""
    print(json.dumps(plain(record), ensure_ascii=False, default=str), flush=True)


def progress(message: str) -> None:
    """What a long task is doing, on stderr, so that stdout stays the result."""
    err_console.print(f"[dim]lab:[/] {shown(message)}")


def when(value: datetime | None, short: bool = False) -> str:
    """A UTC time for tables; ``short`` drops the year to save width."""
    return value.strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S") if value else "-"


def table(*columns: str, title: str | None = None, caption: str | None = "times are UTC") -> Table:
    """A compact table, with the columns people scan by kept on one line."""
    out = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, caption=caption)
    for name in columns:
        out.add_column(name, no_wrap=name in ("id", "key", "status", "outcome"))
    return out
