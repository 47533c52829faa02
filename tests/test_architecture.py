"""The import contracts of pyproject.toml (`make lint` runs them): they hold on the code as it
is, and a deliberate violation of each kind breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the package under ``src``, with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=src.parent, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_code_keeps_every_contract() -> None:
    done = lint_imports(ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core.py", "import operator_ai.lab.runtime", "layers"),
        ("tui/text.py", "import operator_ai.cli.output", "layers"),
        ("subjects/etcd/load.py", "import operator_ai.subjects.ratelimiter.declared",
         "subjects do not know each other"),
        ("subjects/ratelimiter/service/limits.py", "import operator_ai.errors",
         "the rate limiter service stands alone"),
        ("lab/faults.py", "import operator_ai.lab.injections", "no circle"),
    ],
)  # fmt: skip
def test_a_deliberate_violation_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "operator_ai", src / "operator_ai",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    with open(src / "operator_ai" / module, "a") as source:
        source.write(f"\n{line}  # the violation\n")
    done = lint_imports(src)
    assert done.returncode != 0, done.stdout
    broken = [row for row in done.stdout.splitlines() if row.endswith("BROKEN")]
    assert [row for row in broken if row.startswith(contract)], done.stdout
