"""``load_model``: from a spec string and the settings to a ready Model.

A spec is ``PREFIX:REST``. The prefix names a ``ModelProvider`` registered in the
``operator_ai.models`` entry-point group, which builds the model from the rest; the built-in
providers and the specs they take are in models.providers.
"""

from __future__ import annotations

from typing import cast

from operator_ai import plugins
from operator_ai.config import Settings
from operator_ai.errors import NoModel
from operator_ai.models import Model, ModelProvider


def load_model(spec: str | None, settings: Settings) -> Model:
    """The model a spec names. Raises NoModel, saying what to fix, when it cannot be built."""
    spec = (spec or "").strip()
    if not spec:
        raise NoModel("no model configured")
    prefix, colon, rest = spec.partition(":")
    known = plugins.names(plugins.MODELS)
    if not colon or prefix not in known:
        starts = ", ".join(p + ":" for p in known) or "a provider's prefix (none is installed)"
        raise NoModel(f"model spec {spec!r} names no known provider; start it with {starts}")
    provider = plugins.load(
        plugins.MODELS,
        prefix,
        "model provider",
        error=NoModel,
        accepts=callable,
        shape="callable: (spec, rest, settings) -> Model",
    )
    return cast(ModelProvider, provider)(spec, rest, settings)
