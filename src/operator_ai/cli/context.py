"""What every command shares: the flags given at the root, resolved into settings and a
store on first use (so `--help` works even when the config is broken)."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import typer

from operator_ai.approval.gate import MODES
from operator_ai.config import Settings, load_settings
from operator_ai.errors import UsageError
from operator_ai.lab import Lab, find_lab
from operator_ai.store import Store

ApprovalOption = typer.Option(
    None,
    "--approval",
    help="Which of the agent's commands wait for a human: never, writes (all but those proved "
    "read-only) or always. Default: the approval setting (never).",
)
LabOption = typer.Option(None, "--lab", help="The lab's name (default: the only lab that is up).")
"""How every command that works on a running lab chooses it."""


@dataclass
class AppContext:
    flags: dict[str, Any]
    _resolved: tuple[Settings, dict[str, str]] | None = None
    _store: Store | None = field(default=None, repr=False)

    def resolve(self) -> tuple[Settings, dict[str, str]]:
        if self._resolved is None:
            self._resolved = load_settings(os.environ, self.flags)
        return self._resolved

    @property
    def settings(self) -> Settings:
        return self.resolve()[0]

    @property
    def store(self) -> Store:
        if self._store is None:
            settings = self.settings
            self._store = Store(settings.db, reopen_window=settings.reopen_window_seconds)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext), "the root callback sets the context"
    return obj


def open_lab(ctx: typer.Context, name: str | None) -> Lab:
    """The lab ``--lab`` names, or the only one that is up."""
    return Lab(find_lab(app_context(ctx).settings.home, name))


def stop_on_signals(*also: signal.Signals) -> threading.Event:
    """An event that SIGINT (Ctrl-C), SIGTERM (and ``also``) set, for commands that run
    until stopped and then finish what they were doing."""
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, *also):
        signal.signal(sig, on_signal)
    return stop


def approval_mode(ctx: typer.Context, given: str | None) -> str:
    """The approval mode: the flag's, or the settings'."""
    mode = given or app_context(ctx).settings.approval
    if mode not in MODES:
        raise UsageError(f"--approval must be {', '.join(MODES)}, not {mode!r}")
    return mode
