"""The plugin door: the built-in providers and sandboxes are found through their entry-point
groups, and a third party's package, a real distribution on sys.path, adds a model provider
and a sandbox without touching a core file."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from operator_ai import plugins
from operator_ai.config import Settings
from operator_ai.errors import NoModel, OperatorError, SandboxError, UnknownSubject
from operator_ai.lab import Lab, LabDir
from operator_ai.models import UserMessage, providers
from operator_ai.models.spec import load_model
from operator_ai.sandbox import bwrap, docker, host, load_sandbox, sandbox_for
from operator_ai.sandbox.host import HostSandbox

MODULE = "operator_ai_thirdparty_example"
DIST = "operator-ai-thirdparty-example"

PLUGIN = """
import subprocess

from operator_ai.errors import NoModel
from operator_ai.models import Turn, Usage
from operator_ai.sandbox import CommandResult

NOT_A_FUNCTION = "a string"


class HalfSubject:
    name = "half"
    description = "a subject written before subjects named their runtimes"


class EchoModel:
    name = "echo"

    def __init__(self, spec, greeting, settings):
        self.spec = spec
        self.greeting = greeting
        self.settings = settings

    def complete(self, system, messages, tools):
        return Turn(f"{self.greeting}, {messages[-1].text}", usage=Usage(3, 2))

    def close(self):
        pass


def provider(spec, rest, settings):
    if not rest:
        raise NoModel(f"model spec {spec!r} names no greeting")
    return EchoModel(spec, rest, settings)


class HomeSandbox:
    name = "home"
    warning = "runs in the operator's home"

    def __init__(self, lab, home, hide):
        self.lab = lab
        self.home = home
        self.hide = tuple(hide)

    def run(self, command, timeout=120.0):
        done = subprocess.run(
            ["bash", "-c", command], cwd=self.home, capture_output=True, text=True,
            timeout=timeout,
        )
        return CommandResult(done.returncode, done.stdout, done.stderr, 0)


def sandbox(lab, home, hide):
    return HomeSandbox(lab, home, hide)
"""

ENTRY_POINTS = f"""\
[operator_ai.models]
echo = {MODULE}:provider
broken = {MODULE}_missing:provider
notcallable = {MODULE}:NOT_A_FUNCTION

[operator_ai.sandboxes]
home = {MODULE}:sandbox
bwrap = {MODULE}:sandbox

[operator_ai.subjects]
half = {MODULE}:HalfSubject
"""


@pytest.fixture
def third_party(tmp_path: Path) -> Iterator[Path]:
    """A third party's package, installed as pip would: a module and its ``.dist-info``."""
    site = tmp_path / "site-packages"
    info = site / f"{DIST.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    sys.path.append(str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.path_importer_cache.pop(str(site), None)
        sys.modules.pop(MODULE, None)
        importlib.invalidate_caches()


@pytest.fixture
def conf(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'operator.db'}")


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    lab = Lab(LabDir(tmp_path / "home", "plugged"))
    lab.path.mkdir(parents=True)
    return lab


# --- the built-ins ---


def test_the_built_ins_register_through_the_groups() -> None:
    assert {"anthropic", "openai", "scripted"} <= set(plugins.names(plugins.MODELS))
    assert plugins.load(plugins.MODELS, "anthropic", "model provider") is providers.anthropic
    assert plugins.load(plugins.MODELS, "openai", "model provider") is providers.openai
    assert plugins.load(plugins.MODELS, "scripted", "model provider") is providers.scripted

    assert {"bwrap", "docker", "host"} <= set(plugins.names(plugins.SANDBOXES))
    assert plugins.load(plugins.SANDBOXES, "bwrap", "sandbox") is bwrap.sandbox
    assert plugins.load(plugins.SANDBOXES, "docker", "sandbox") is docker.sandbox
    assert plugins.load(plugins.SANDBOXES, "host", "sandbox") is host.sandbox

    assert {"etcd", "ratelimiter", "tikv"} <= set(plugins.names(plugins.SUBJECTS))
    assert plugins.load_subject("etcd").name == "etcd"


def test_loading_the_built_in_providers_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "from operator_ai import plugins\n"
        "for name in plugins.names(plugins.MODELS):\n"
        "    assert callable(plugins.load(plugins.MODELS, name, 'model provider'))\n"
        "print(sorted({'anthropic', 'openai'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_host_sandbox_is_built_through_the_door(lab: Lab, tmp_path: Path) -> None:
    built = sandbox_for(lab, tmp_path, unsafe_host=True)
    assert isinstance(built, HostSandbox)
    assert built.run("pwd").stdout.strip() == str(lab.path)
    assert isinstance(load_sandbox("host", lab, tmp_path), HostSandbox)


def test_a_name_no_plugin_has_lists_the_installed_ones() -> None:
    with pytest.raises(OperatorError) as caught:
        plugins.load(plugins.MODELS, "nothing-here", "model provider")
    assert "no model provider named 'nothing-here' (installed: anthropic, " in str(caught.value)
    with pytest.raises(SandboxError, match=r"no sandbox named 'jail' \(installed: bwrap, "):
        plugins.load(plugins.SANDBOXES, "jail", "sandbox", error=SandboxError)
    assert plugins.names("operator_ai.no_such_group") == []


# --- a third party ---


def test_a_third_party_provider_is_a_model_prefix(third_party: Path, conf: Settings) -> None:
    assert "echo" in plugins.names(plugins.MODELS)
    model = load_model("echo:hello", conf)
    assert type(model).__module__ == MODULE
    assert model.spec == "echo:hello" and model.name == "echo"
    assert model.settings is conf  # type: ignore[attr-defined]
    turn = model.complete("system", [UserMessage("operator")], [])
    assert turn.text == "hello, operator" and turn.usage.total == 5

    with pytest.raises(NoModel, match="model spec 'echo:' names no greeting"):
        load_model("echo:", conf)


def test_unknown_prefixes_list_the_installed_providers(third_party: Path, conf: Settings) -> None:
    with pytest.raises(NoModel) as caught:
        load_model("gemini:pro", conf)
    message = str(caught.value)
    assert "'gemini:pro' names no known provider; start it with anthropic:, broken:, " in message
    assert "echo:" in message and "openai:" in message and "scripted:" in message
    assert "ANTHROPIC_API_KEY" in caught.value.hint


def test_a_broken_provider_says_which_package_to_fix(third_party: Path, conf: Settings) -> None:
    with pytest.raises(NoModel) as caught:
        load_model("broken:x", conf)
    assert "the model provider 'broken' (" in str(caught.value)
    assert f"from {DIST}) cannot be loaded: ModuleNotFoundError" in str(caught.value)
    assert isinstance(caught.value.__cause__, ImportError)
    assert f"pip install --force-reinstall {DIST}" in caught.value.hint

    with pytest.raises(NoModel, match=r"the model provider 'notcallable' \(.*\) is not callable"):
        load_model("notcallable:x", conf)


def test_a_third_party_sandbox_runs_commands(third_party: Path, lab: Lab, tmp_path: Path) -> None:
    secret = tmp_path / "operator.db"
    built = load_sandbox("home", lab, tmp_path, hide=[secret])
    assert type(built).__module__ == MODULE
    assert built.lab is lab and built.hide == (secret,)  # type: ignore[attr-defined]
    result = built.run("pwd; echo out; echo err >&2; exit 3")
    assert result.exit_code == 3
    assert result.stdout == f"{tmp_path}\nout\n" and result.stderr == "err\n"

    with pytest.raises(SandboxError) as caught:
        load_sandbox("jail", lab, tmp_path)
    assert "no sandbox named 'jail' (installed: bwrap, docker, home, host)" in str(caught.value)


def test_the_third_party_is_gone_after_its_fixture(conf: Settings) -> None:
    assert "echo" not in plugins.names(plugins.MODELS)
    with pytest.raises(NoModel, match="names no known provider"):
        load_model("echo:hello", conf)


def test_no_package_stands_in_for_another_s_sandbox(
    third_party: Path, lab: Lab, tmp_path: Path
) -> None:
    """The sandbox is the safety boundary: a second `bwrap` is refused, never picked."""
    with pytest.raises(SandboxError, match="several packages register the sandbox 'bwrap'"):
        load_sandbox("bwrap", lab, tmp_path)


def test_a_subject_missing_members_says_which(third_party: Path) -> None:
    with pytest.raises(UnknownSubject, match=r"it has no briefing, check,.* runtimes, topology"):
        plugins.load_subject("half")
