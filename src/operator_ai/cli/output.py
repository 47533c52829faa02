"""Printing: Rich for people, ``--json`` for scripts. Both come from the same records."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from enum import Enum
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")

STATUS_STYLE = {
    "open": "bold red",
    "working": "yellow",
    "resolved": "green",
    "escalated": "magenta",
    "failed": "red",
    "interrupted": "dim",
}


_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
LONG_LINE = 2000
"""Characters of one line shown before the rest of it is folded away."""


def inert(text: str, fold: bool = True) -> str:
    """``text`` safe to put on a terminal: every control character but newline and tab, and
    every bidirectional override, shown as an escape (``\\x1b``), so that command output
    cannot move the cursor, erase lines, set the title or reorder what is read; with
    ``fold``, lines longer than LONG_LINE are cut, saying how much."""
    text = _UNSAFE.sub(lambda m: repr(m.group())[1:-1], text)
    if not fold or len(text) <= LONG_LINE:
        return text
    return "\n".join(
        line
        if len(line) <= LONG_LINE
        else f"{line[:LONG_LINE]}… ({len(line) - LONG_LINE} more characters on this line)"
        for line in text.split("\n")
    )


def shown(text: str, fold: bool = True) -> str:
    """Text from the audit trail (the model's or a command's) as inert Rich markup."""
    return escape(inert(text, fold))


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


def when(value: datetime | None, short: bool = False) -> str:
    """A UTC time for tables; ``short`` drops the year to save width."""
    return value.strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S") if value else "-"


def styled(status: str | None) -> str:
    if not status:
        return "-"
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else escape(status)


def table(*columns: str, title: str | None = None, caption: str | None = "times are UTC") -> Table:
    """A compact table, with the columns people scan by kept on one line."""
    out = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, caption=caption)
    for name in columns:
        out.add_column(name, no_wrap=name in ("id", "key", "status", "outcome"))
    return out
