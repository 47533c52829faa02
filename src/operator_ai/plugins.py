"""The one door for plugins: the entry-point groups, read here and nowhere else.

Subjects, model providers and sandboxes are each found by name in a group. The built-ins
register in pyproject.toml exactly as a third party's package does, so adding one touches no
core file. When two packages register the same name, the first found on ``sys.path`` wins.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import cast

from operator_ai.core import Subject
from operator_ai.errors import OperatorError, UnknownSubject

SUBJECTS = "operator_ai.subjects"
"""Each entry point names a ``Subject`` object (operator_ai.subjects)."""
MODELS = "operator_ai.models"
"""Each entry point, named for its spec prefix, names a ``ModelProvider`` (operator_ai.models)."""
SANDBOXES = "operator_ai.sandboxes"
"""Each entry point names a ``SandboxFactory`` (operator_ai.sandbox)."""


def names(group: str) -> list[str]:
    """The names registered in ``group``, sorted, each once."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load(
    group: str,
    name: str,
    what: str,
    *,
    error: type[OperatorError] = OperatorError,
    accepts: Callable[[object], bool] = lambda _: True,
    shape: str = "",
) -> object:
    """The object the plugin ``name`` registers in ``group``.

    ``what`` names the kind of plugin in messages ("model provider"). Raises ``error`` when
    no plugin has that name (listing the installed ones), when it cannot be imported, or when
    what it names is not what ``accepts`` takes (``shape`` says what that is).
    """
    registered = {ep.value: ep for ep in entry_points(group=group).select(name=name)}
    if not registered:
        installed = ", ".join(names(group)) or "none"
        raise error(f"no {what} named {name!r} (installed: {installed})")
    if len(registered) > 1:  # never let one package quietly stand in for another's plugin
        raise error(
            f"several packages register the {what} {name!r}: {', '.join(sorted(registered))}",
            hint="Uninstall all but one of them.",
        )
    [ep] = registered.values()
    try:
        found = ep.load()
    except Exception as exc:  # a plugin's import can fail in any way: it is foreign code
        package = ep.dist.name if ep.dist is not None else None
        raise error(
            f"the {what} {name!r} ({ep.value}, from {package or 'an unknown package'}) "
            f"cannot be loaded: {type(exc).__name__}: {exc}",
            hint=(
                f"Reinstall {package} (`pip install --force-reinstall {package}`), "
                f"or uninstall it to drop the {what}."
                if package
                else f"Reinstall or uninstall the package that registers the {what}."
            ),
        ) from exc
    if not accepts(found):
        raise error(
            f"the {what} {name!r} ({ep.value}) is not {shape}",
            hint=f"Its entry point must name {shape}.",
        )
    return found


SUBJECT_MEMBERS = sorted(
    {*Subject.__annotations__, *(n for n in vars(Subject) if not n.startswith("_"))}
)
"""What a subject must have: core.Subject's attributes and methods."""


def load_subject(name: str) -> Subject:
    """The subject plugin registered as ``name``."""
    subject = load(SUBJECTS, name, "subject", error=UnknownSubject)
    missing = [member for member in SUBJECT_MEMBERS if not hasattr(subject, member)]
    if missing:
        raise UnknownSubject(
            f"the subject {name!r} is not a Subject: it has no {', '.join(missing)}",
            hint="Its entry point must name an object with every member of "
            "operator_ai.core.Subject.",
        )
    return cast(Subject, subject)
