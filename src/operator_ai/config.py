"""Settings, resolved once at the edge.

Precedence, lowest first: built-in defaults, ``$OPERATOR_HOME/config.toml``, environment
variables (``OPERATOR_<NAME>``, plus the providers' usual ``ANTHROPIC_API_KEY`` and
``OPENAI_API_KEY``), then command-line flags. Only the CLI calls ``load_settings``; library
code receives a ``Settings`` (or plain arguments) and never reads the environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from operator_ai.errors import ConfigError

DEFAULT_HOME = "~/.operator"
CONFIG_FILE = "config.toml"
# Fallbacks that providers' own tools use; OPERATOR_* variables win over them.
PROVIDER_ENV = {"anthropic_api_key": "ANTHROPIC_API_KEY", "openai_api_key": "OPENAI_API_KEY"}


ApprovalMode = Literal["never", "writes", "always"]
"""never: commands run at once; writes: a command not proved read-only waits for a human;
always: every command waits."""


class Settings(BaseModel):
    """Everything configurable, with its built-in default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(description="Operator's directory: config.toml, operator.db, labs/")
    db: str = Field(description="Store URL: sqlite:///PATH or postgresql://USER@HOST/DB")
    lease_seconds: int = Field(120, gt=0, description="How long a claim lasts without renewal")
    reopen_window_seconds: int = Field(
        600, ge=0, description="A violation back within this long reopens its ticket"
    )
    lab_user: str = Field(
        "operator-lab", description="The unprivileged user lab nodes and the sandbox run as"
    )
    model: str | None = Field(None, description="Model spec, e.g. anthropic:claude-sonnet-5-5")
    summary_model: str | None = Field(
        None,
        description="Small model for one-line audit summaries, e.g. anthropic:claude-haiku-4-5",
    )
    approval: ApprovalMode = Field(
        "never", description="Which agent commands wait for a human: never, writes or always"
    )
    approval_timeout_seconds: float = Field(
        600.0, gt=0, description="How long a command waits for a decision before it is denied"
    )
    anthropic_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None

    def public(self) -> dict[str, Any]:
        """The settings as plain values, with every secret masked."""
        from sqlalchemy.engine import make_url

        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask(value.get_secret_value())
            elif name == "db":
                value = make_url(value).render_as_string(hide_password=True)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def mask(secret: str) -> str:
    return "****" + secret[-4:] if len(secret) > 12 else "****"


def load_settings(
    env: Mapping[str, str], flags: Mapping[str, Any] | None = None
) -> tuple[Settings, dict[str, str]]:
    """Resolve the settings; return them with where each value came from."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    names = [n for n in Settings.model_fields if n != "home"]

    home = Path(flags.get("home") or env.get("OPERATOR_HOME") or DEFAULT_HOME).expanduser()
    values: dict[str, Any] = {"home": home, "db": f"sqlite:///{home / 'operator.db'}"}
    sources = dict.fromkeys(values, "default")
    if "home" in flags or "OPERATOR_HOME" in env:
        sources["home"] = "flag" if "home" in flags else "env OPERATOR_HOME"

    path = home / CONFIG_FILE
    for name, value in _read_file(path, names).items():
        values[name], sources[name] = value, str(path)
    for name in names:
        for var in (PROVIDER_ENV.get(name), f"OPERATOR_{name.upper()}"):
            if var and env.get(var):
                values[name], sources[name] = env[var], f"env {var}"
        if name in flags:
            values[name], sources[name] = flags[name], "flag"
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(
            f"invalid setting {name} (from {sources.get(name, 'default')}): {err['msg']}"
        ) from exc
    for name in type(settings).model_fields:
        sources.setdefault(name, "default")
    return settings, sources


def _read_file(path: Path, names: list[str]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed config file {path}: {exc}") from exc
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r} in {path}",
            hint=f"Valid settings: {', '.join(names)}.",
        )
    return data
