"""The built-in model providers, registered in pyproject.toml as any plugin's would be.

    anthropic:claude-sonnet-5-5                 needs anthropic_api_key (ANTHROPIC_API_KEY)
    anthropic:claude-sonnet-5-5@https://PROXY   the same, through a proxy or gateway
    openai:gpt-4.1                              needs openai_api_key (OPENAI_API_KEY)
    openai:qwen2.5@http://127.0.0.1:11434/v1    any OpenAI-compatible server; no key needed
    scripted:path/to/script.yaml                plays back a script (see models.scripted)

Without ``@URL``, OpenAI models use the ``openai_base_url`` setting, else the SDK's default;
an OpenAI model with a base URL from either place may go without a key. Each is a
``ModelProvider``; the SDKs are imported only when a model of theirs is built, because each
takes a noticeable time to import.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from operator_ai.errors import NoModel

if TYPE_CHECKING:
    from pydantic import SecretStr

    from operator_ai.config import Settings
    from operator_ai.models import Model

# Local servers ignore the key, but the SDK will not send a request without one.
NO_KEY = "not-needed"
_NAME_AT_URL = re.compile(r"(?P<name>[^@\s]+)(?:@(?P<url>https?://\S+))?")


def anthropic(spec: str, rest: str, settings: Settings) -> Model:
    name, base_url = _name_at_url(spec, rest)
    key = _secret(settings.anthropic_api_key)
    if not key:
        raise NoModel(f"{spec} needs an Anthropic API key: set ANTHROPIC_API_KEY")
    from operator_ai.models.anthropic import AnthropicModel

    return AnthropicModel(spec, name, key, base_url=base_url)


def openai(spec: str, rest: str, settings: Settings) -> Model:
    name, base_url = _name_at_url(spec, rest)
    base_url = base_url or settings.openai_base_url
    key = _secret(settings.openai_api_key) or (NO_KEY if base_url else "")
    if not key:
        raise NoModel(
            f"{spec} needs an OpenAI API key: set OPENAI_API_KEY, "
            f"or name a local server with {_prefix(spec)}:{name}@http://HOST:PORT/v1"
        )
    from operator_ai.models.openai import OpenAIModel

    return OpenAIModel(spec, name, key, base_url=base_url)


def scripted(spec: str, rest: str, settings: Settings) -> Model:
    if not rest:
        raise NoModel(f"model spec {spec!r} names no script file")
    from operator_ai.models.scripted import ScriptedModel

    return ScriptedModel.from_file(Path(rest), spec)


def _name_at_url(spec: str, rest: str) -> tuple[str, str | None]:
    """``MODEL`` or ``MODEL@http(s)://HOST/PATH``, as the model's name and base URL."""
    match = _NAME_AT_URL.fullmatch(rest)
    if match is None:
        prefix = _prefix(spec)
        raise NoModel(
            f"model spec {spec!r} is not {prefix}:MODEL or {prefix}:MODEL@http(s)://HOST/PATH"
        )
    return match["name"], match["url"]


def _prefix(spec: str) -> str:
    """The prefix the provider was registered under, which need not be its own name."""
    return spec.partition(":")[0]


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""
