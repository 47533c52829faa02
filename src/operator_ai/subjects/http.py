"""What subjects share when they look at nodes over HTTP."""

from __future__ import annotations

import httpx


def describe(exc: Exception) -> str:
    """A short reason for a failed request, for tickets and status lines."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"
