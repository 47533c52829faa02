"""Settings: defaults, then config.toml, then environment, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from operator_ai.config import load_settings
from operator_ai.errors import ConfigError


def test_defaults_live_under_home(tmp_path: Path) -> None:
    settings, sources = load_settings({"OPERATOR_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.db == f"sqlite:///{tmp_path / 'operator.db'}"
    assert settings.lease_seconds == 120
    assert sources["db"] == "default" and sources["home"] == "env OPERATOR_HOME"


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'db = "postgresql://ops@db.internal/operator"\nlease_seconds = 60\nmodel = "openai:x"\n'
    )
    env = {"OPERATOR_HOME": str(tmp_path), "OPERATOR_LEASE_SECONDS": "90"}
    settings, sources = load_settings(env, {"model": "scripted:demo.yaml", "db": None})
    assert settings.db == "postgresql://ops@db.internal/operator"
    assert sources["db"] == str(tmp_path / "config.toml")
    assert settings.lease_seconds == 90 and sources["lease_seconds"] == "env OPERATOR_LEASE_SECONDS"
    assert settings.model == "scripted:demo.yaml" and sources["model"] == "flag"


def test_provider_key_fallback_and_masking(tmp_path: Path) -> None:
    env = {
        "OPERATOR_HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-ant-api03-very-secret-7788",
        "OPERATOR_DB": "postgresql://ops:hunter2@127.0.0.1/operator",
    }
    settings, sources = load_settings(env)
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value().endswith("7788")
    assert sources["anthropic_api_key"] == "env ANTHROPIC_API_KEY"
    shown = settings.public()
    assert shown["anthropic_api_key"] == "****7788"
    assert "hunter2" not in shown["db"] and "***" in shown["db"]
    assert "very-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("db = [unclosed", "malformed config file"),
        ("dbb = 'sqlite:///x'", "unknown setting 'dbb'"),
        ("lease_seconds = 'soon'", "invalid setting lease_seconds"),
        ("lease_seconds = -5", "invalid setting lease_seconds"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings({"OPERATOR_HOME": str(tmp_path)})


def test_the_store_is_created_private_and_config_show_warns_of_readable_secrets(
    tmp_path: Path,
) -> None:
    """operator.db and its -wal/-shm are the operator's alone; a config anyone can read (with
    an API key in it) is named by `config show`, with the fix."""
    from conftest import run_cli
    from operator_ai.store import Store

    with Store(f"sqlite:///{tmp_path / 'operator.db'}") as store:
        store.tickets()  # opens it, in WAL mode
        made = [p for p in tmp_path.iterdir() if p.name.startswith("operator.db")]
        assert {p.name for p in made} >= {"operator.db", "operator.db-wal", "operator.db-shm"}
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in made), made

    quiet = run_cli("config", "show", home=tmp_path)
    assert quiet.returncode == 0 and "readable by other users" not in quiet.stderr

    config = tmp_path / "config.toml"
    config.write_text('anthropic_api_key = "sk-x"\n')
    config.chmod(0o644)
    warned = run_cli("config", "show", home=tmp_path)
    assert warned.returncode == 0
    assert f"{config} is readable by other users" in warned.stderr.replace("\n", "")
    assert f"chmod 600 {config}" in warned.stderr.replace("\n", "")
    as_json = run_cli("config", "show", "--json", home=tmp_path)
    assert '"readable_by_others": [' in as_json.stdout and str(config) in as_json.stdout
