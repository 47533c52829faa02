"""What the classifier says of a command, and of each of its parts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class Verdict(IntEnum):
    """Ordered by how much a human must look: the worst part of a command decides."""

    READ_ONLY = 0
    UNKNOWN = 1
    WRITES = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    why: str

    @property
    def read_only(self) -> bool:
        return self.verdict == Verdict.READ_ONLY


READ = Classification(Verdict.READ_ONLY, "reads only")


def writes(why: str) -> Classification:
    return Classification(Verdict.WRITES, why)


def unknown(why: str) -> Classification:
    return Classification(Verdict.UNKNOWN, why)


def worst(parts: Iterable[Classification]) -> Classification:
    """The part that needs the most care; READ when there are none."""
    return max(parts, key=lambda c: c.verdict, default=READ)


@dataclass(frozen=True)
class Args:
    """A command's arguments as text; ``opaque`` marks the ones computed at run time."""

    words: tuple[str, ...]
    opaque: frozenset[int]
