"""Text for a terminal: what came from outside made inert, and statuses in colour."""

from __future__ import annotations

import re

from rich.markup import escape

STATUS_STYLE = {
    "open": "bold red",
    "working": "yellow",
    "resolved": "green",
    "escalated": "magenta",
    "failed": "red",
    "interrupted": "dim",
    "pending": "bold yellow",
    "approved": "green",
    "denied": "red",
    "timed_out": "red",
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


def styled(status: str | None) -> str:
    if not status:
        return "-"
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else escape(status)
