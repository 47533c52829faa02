"""The `operator` command as users run it: a real child process, real databases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import run_cli
from operator_ai.lab.network import free_port
from operator_ai.store import AuditKind, Store, Violation


def _seed(home: Path) -> str:
    url = f"sqlite:///{home / 'operator.db'}"
    with Store(url) as store:
        store.report_violation(
            Violation("etcd", "member_down", "n1", "n1 is down", "critical", {"health": False})
        )
        store.report_violation(
            Violation("etcd", "db_near_quota", "n2", "db at 91% of quota"), scope="other-lab"
        )
        claim = store.claim("worker-1", 60, model="scripted:demo")
        assert claim is not None
        sid = claim.session.id
        store.append_audit(sid, AuditKind.REASONING, "n1 stopped answering; check supervisor")
        store.append_audit(
            sid,
            AuditKind.TOOL_CALL,
            "supervisorctl status",
            tool="shell",
            params={"command": "supervisorctl status", "reasoning": "is n1 up"},
        )
        output = "\n".join(f"n{i} RUNNING pid {100 + i}" for i in range(40))
        store.append_audit(sid, AuditKind.TOOL_RESULT, output, exit_code=3, duration_ms=80)
    return url


def _failed_cleanly(result: object) -> str:
    """The run exited non-zero with a short message and no traceback; return stderr."""
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 1, (result.stdout, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    assert stderr.startswith("error: ")
    assert 1 <= len(stderr.strip().splitlines()) <= 2, stderr
    return stderr


def _fingerprint(home: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.iterdir())}


def test_tickets_list_and_show(tmp_path: Path) -> None:
    _seed(tmp_path)
    listed = run_cli("tickets", "list", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "etcd:member_down:n1" in listed.stdout and "working" in listed.stdout
    data = json.loads(
        run_cli("tickets", "list", "--status", "open", "--json", home=tmp_path).stdout
    )
    assert [t["key"] for t in data] == ["etcd:db_near_quota:n2"]

    shown = run_cli("tickets", "show", "1", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Timeline" in shown.stdout and "claimed" in shown.stdout
    assert "worker-1" in shown.stdout and "scripted:demo" in shown.stdout
    detail = json.loads(run_cli("tickets", "show", "1", "--json", home=tmp_path).stdout)
    assert detail["ticket"]["evidence"] == {"health": False}
    assert [e["kind"] for e in detail["timeline"]] == ["opened", "claimed"]
    assert detail["sessions"][0]["worker"] == "worker-1"


def test_hold_unhold_resolve_reopen(tmp_path: Path) -> None:
    _seed(tmp_path)
    held = json.loads(run_cli("tickets", "hold", "1", "--json", home=tmp_path).stdout)
    assert held["held"] is True and held["status"] == "open"
    assert "ticket 1 unheld" in run_cli("tickets", "unhold", "1", home=tmp_path).stdout
    resolved = run_cli("tickets", "resolve", "1", "--note", "restarted n1", "--json", home=tmp_path)
    assert json.loads(resolved.stdout)["resolution"] == "restarted n1"
    again = run_cli("tickets", "reopen", "1", home=tmp_path)
    assert again.returncode == 0 and "open" in again.stdout
    stderr = _failed_cleanly(run_cli("tickets", "reopen", "1", home=tmp_path))
    assert "not closed" in stderr


def test_audit_list_and_transcript(tmp_path: Path) -> None:
    _seed(tmp_path)
    sessions = json.loads(run_cli("audit", "list", "--json", home=tmp_path).stdout)
    assert sessions[0]["model"] == "scripted:demo"
    shown = run_cli("audit", "show", "1", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "$ supervisorctl status" in shown.stdout and "# is n1 up" in shown.stdout
    assert "exit 3" in shown.stdout
    assert "28 lines folded" in shown.stdout and "n39 RUNNING" in shown.stdout
    assert "n20 RUNNING" not in shown.stdout
    assert "n20 RUNNING" in run_cli("audit", "show", "1", "--full", home=tmp_path).stdout
    entries = json.loads(run_cli("audit", "show", "1", "--json", home=tmp_path).stdout)["entries"]
    assert [e["kind"] for e in entries] == ["reasoning", "tool_call", "tool_result"]


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-proj-abcdefghijkl-9999"}
    shown = run_cli("config", "show", "--json", home=tmp_path, env=env)
    data = json.loads(shown.stdout)
    assert data["settings"]["openai_api_key"] == "****9999"
    assert "abcdefghijkl" not in shown.stdout
    assert data["sources"]["openai_api_key"] == "env OPENAI_API_KEY"


def test_unknown_ids_fail_cleanly_and_write_nothing(tmp_path: Path) -> None:
    _seed(tmp_path)
    before = _fingerprint(tmp_path)
    for args in (
        ["tickets", "show", "42"],
        ["tickets", "hold", "42"],
        ["tickets", "resolve", "42", "--note", "x"],
        ["audit", "show", "42"],
    ):
        stderr = _failed_cleanly(run_cli(*args, home=tmp_path))
        assert "with id 42" in stderr
    assert _fingerprint(tmp_path) == before


def test_corrupt_database_file(tmp_path: Path) -> None:
    (tmp_path / "operator.db").write_bytes(b"definitely not SQLite " * 200)
    before = _fingerprint(tmp_path)
    stderr = _failed_cleanly(run_cli("tickets", "list", home=tmp_path))
    assert "not a database" in stderr and "operator.db" in stderr
    assert _fingerprint(tmp_path) == before


def test_unreachable_postgresql(tmp_path: Path) -> None:
    url = f"postgresql://operator@127.0.0.1:{free_port()}/operator"
    stderr = _failed_cleanly(run_cli("--db", url, "tickets", "list", home=tmp_path))
    assert "cannot use the database" in stderr and "refused" in stderr.lower()
    assert list(tmp_path.iterdir()) == []


def test_malformed_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("lease_seconds = \n")
    stderr = _failed_cleanly(run_cli("tickets", "list", home=tmp_path))
    assert "malformed config file" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"], "no database was created"
    assert run_cli("tickets", "--help", home=tmp_path).returncode == 0, "help still works"


def test_module_entry_point_matches_console_script(tmp_path: Path) -> None:
    result = run_cli("--version", home=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("operator-ai ")


@pytest.mark.parametrize(
    ("args", "wrong", "hint"),
    [
        (["lab", "up", "etcd", "--mode", "bogus"], "--mode must be netns or loopback",
         "netns needs root"),
        (["lab", "up", "etcd", "--runtime", "vm"], "--runtime must be process or docker",
         "subject's own runtime"),
        (["lab", "up", "tikv", "--runtime", "docker", "--mode", "netns"],
         "--mode applies to the process runtime only", "Drop --mode"),
        (["monitor", "run", "--lab", "etcd", "--interval", "0"],
         "--interval must be positive", "--interval 1"),
    ],
)  # fmt: skip
def test_a_bad_flag_is_a_usage_error_that_says_what_is_wrong(
    tmp_path: Path, args: list[str], wrong: str, hint: str
) -> None:
    result = run_cli(*args, home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert wrong in result.stderr and hint in result.stderr
    assert "lab status" not in result.stderr  # not the lab's hint: nothing is wrong with a lab


def test_tickets_list_and_show_name_the_incident(tmp_path: Path) -> None:
    url = _seed(tmp_path)
    with Store(url) as store:  # opens while worker-1 works ticket 1: it joins that incident
        store.report_violation(Violation("etcd", "no_leader", "cluster", "no leader"))
    listed = json.loads(run_cli("tickets", "list", "--json", home=tmp_path).stdout)
    assert {t["key"]: t["incident_id"] for t in listed} == {
        "etcd:no_leader:cluster": 1, "etcd:db_near_quota:n2": 2, "etcd:member_down:n1": 1,
    }  # fmt: skip
    assert "#1" in run_cli("tickets", "list", home=tmp_path).stdout
    shown = run_cli("tickets", "show", "1", home=tmp_path)
    assert "Incident #1" in shown.stdout and "etcd:no_leader:cluster" in shown.stdout
    detail = json.loads(run_cli("tickets", "show", "3", "--json", home=tmp_path).stdout)
    assert [t["key"] for t in detail["incident"]] == [
        "etcd:member_down:n1",
        "etcd:no_leader:cluster",
    ]
    assert detail["ticket"]["status"] == "working" and detail["sessions"][0]["worker"] == "worker-1"
