"""``load_model``: from a spec string and the settings to a ready Model.

    anthropic:claude-sonnet-5-5                 needs anthropic_api_key (ANTHROPIC_API_KEY)
    anthropic:claude-sonnet-5-5@https://PROXY   the same, through a proxy or gateway
    openai:gpt-4.1                              needs openai_api_key (OPENAI_API_KEY)
    openai:qwen2.5@http://127.0.0.1:11434/v1    any OpenAI-compatible server; no key needed
    scripted:path/to/script.yaml                plays back a script (see models.scripted)

Without ``@URL``, OpenAI models use the ``openai_base_url`` setting, else the SDK's default;
an OpenAI model with a base URL from either place may go without a key.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from operator_ai.config import Settings
from operator_ai.errors import NoModel
from operator_ai.models import Model
from operator_ai.models.scripted import ScriptedModel

PROVIDERS = ("anthropic", "openai", "scripted")
# Local servers ignore the key, but the SDK will not send a request without one.
NO_KEY = "not-needed"
_NAME_AT_URL = re.compile(r"(?P<name>[^@\s]+)(?:@(?P<url>https?://\S+))?")


def load_model(spec: str | None, settings: Settings) -> Model:
    """The model a spec names. Raises NoModel, saying what to fix, when it cannot be built."""
    spec = (spec or "").strip()
    if not spec:
        raise NoModel("no model configured")
    provider, colon, rest = spec.partition(":")
    if not colon or provider not in PROVIDERS:
        raise NoModel(
            f"model spec {spec!r} names no known provider; "
            f"start it with {', '.join(p + ':' for p in PROVIDERS)}"
        )
    if provider == "scripted":
        if not rest:
            raise NoModel(f"model spec {spec!r} names no script file")
        return ScriptedModel.from_file(Path(rest), spec)

    match = _NAME_AT_URL.fullmatch(rest)
    if match is None:
        raise NoModel(
            f"model spec {spec!r} is not {provider}:MODEL or {provider}:MODEL@http(s)://HOST/PATH"
        )
    name, base_url = match["name"], match["url"]
    if provider == "anthropic":
        key = _secret(settings.anthropic_api_key)
        if not key:
            raise NoModel(f"{spec} needs an Anthropic API key: set ANTHROPIC_API_KEY")
        # The SDKs are imported only when used: each takes a noticeable time to import.
        from operator_ai.models.anthropic import AnthropicModel

        return AnthropicModel(spec, name, key, base_url=base_url)

    base_url = base_url or settings.openai_base_url
    key = _secret(settings.openai_api_key) or (NO_KEY if base_url else "")
    if not key:
        raise NoModel(
            f"{spec} needs an OpenAI API key: set OPENAI_API_KEY, "
            f"or name a local server with openai:{name}@http://HOST:PORT/v1"
        )
    from operator_ai.models.openai import OpenAIModel

    return OpenAIModel(spec, name, key, base_url=base_url)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""
