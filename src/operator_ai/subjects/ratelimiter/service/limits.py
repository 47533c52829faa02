"""Declared limits: the JSON file a node is started with, and how a key's limit is chosen.

    {"default": {"limit": 100, "window_ms": 1000},
     "keys": {"user:1": {"limit": 10, "window_ms": 1000}}}

A key's effective limit is its override in Redis if one is set, else its declared limit,
else the declared default.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from operator_ai.subjects.ratelimiter.service.errors import InvalidConfig

# Keys travel as URL path segments and inside Redis key names; bound them so a client
# cannot make either arbitrarily large.
Key = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class Source(StrEnum):
    """Where a key's effective limit comes from."""

    OVERRIDE = "override"
    DECLARED = "declared"
    DEFAULT = "default"


class Limit(BaseModel):
    """At most ``limit`` requests in any sliding window of ``window_ms`` milliseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=0, description="Requests admitted per window; 0 denies everything")
    window_ms: int = Field(gt=0, le=86_400_000, description="Window length in milliseconds")


class DeclaredLimits(BaseModel):
    """The limits file as declared: a default and per-key limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Limit
    keys: dict[Key, Limit] = Field(default_factory=dict)

    def for_key(self, key: str) -> tuple[Limit, Source]:
        """The declared limit of ``key`` and where it came from (never an override)."""
        if key in self.keys:
            return self.keys[key], Source.DECLARED
        return self.default, Source.DEFAULT


def load_limits(path: Path) -> DeclaredLimits:
    """Read and validate a limits file; every problem becomes ``InvalidConfig``."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidConfig(
            f"cannot read limits file {path}: {exc.strerror or exc}",
            hint="Pass --limits PATH to a readable JSON file.",
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidConfig(
            f"limits file {path} is not valid JSON: {exc}",
            hint='Expected {"default": {"limit": N, "window_ms": M}, "keys": {...}}.',
        ) from exc
    try:
        return DeclaredLimits.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidConfig(
            f"limits file {path} is invalid: {problems}",
            hint='Expected {"default": {"limit": N, "window_ms": M}, "keys": {...}}.',
        ) from exc
