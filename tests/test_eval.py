"""`operator eval` on real etcd labs: trials with scripted models (one that fixes the fault,
one that only claims it did, one that breaks another member on its way), with no agent at
all, a no-op scenario, the script fault, and the runs read back, compared and reported."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_helpers import scripted, shell
from conftest import run_cli
from lab_helpers import ROOT, lab_home, running_lab
from operator_ai.config import Settings
from operator_ai.errors import LabError, ScenarioError
from operator_ai.eval import runs, scenario
from operator_ai.lab import injections as chaos
from operator_ai.lab.injections import Injections
from operator_ai.store import EvalTrial, Store, TrialOutcome

pytestmark = [
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(not ROOT, reason="eval labs and the sandbox need root (netns mode)"),
]


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    with lab_home() as path:
        yield path


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return Settings(home=home, db=f"sqlite:///{home / 'operator.db'}", lease_seconds=10)


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.db) as s:
        yield s


def write(folder: Path, name: str, **keys: Any) -> Path:
    """A scenario file for etcd, with short windows so that a trial takes seconds."""
    spec = {"name": name, "subject": "etcd", "nodes": 3, "load": {"rate": 20},
            "success": {"settle": 5, "max_error_rate": 0.05}, "time_limit": 90, **keys}  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def trial(settings: Settings, store: Store, path: Path, model: str) -> EvalTrial:
    record = runs.run(settings, store, [scenario.load(path)], model)
    [only] = store.eval_trials(record.id)
    return only


KILL_ETCD3 = {"faults": [{"fault": "kill", "target": "etcd3"}],
              "expect": {"tickets": ["member_down"], "within": 30}}  # fmt: skip


def supervisorctl(home: Path, action: str) -> str:
    """The agent's supervisorctl on the (only) eval lab, whatever its run's number."""
    return f"supervisorctl -c {home}/labs/eval-*/supervisord.conf {action}"


def test_a_model_that_fixes_the_fault_succeeds_timed_from_the_injection(
    settings: Settings, store: Store, home: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, "kill-etcd3", **KILL_ETCD3)
    start = shell(supervisorctl(home, "start etcd3"))
    spec = scripted(tmp_path / "fix.yaml", shell("etcdctl version"), start, {"text": "Started."})
    result = trial(settings, store, path, spec)
    assert result.outcome == TrialOutcome.SUCCESS, result.why
    assert result.injected_at is not None and result.started_at < result.injected_at
    assert result.ttd_seconds is not None and result.ttm_seconds is not None
    assert 0 < result.ttd_seconds < result.ttm_seconds < 90
    ticket = store.ticket(result.tickets[0])
    assert ticket.invariant == "member_down" and ticket.target == "etcd3"
    assert ticket.scope.startswith("eval/") and ticket.scope.endswith("/kill-etcd3/1")
    assert (ticket.opened_at - result.injected_at).total_seconds() == pytest.approx(
        result.ttd_seconds
    )
    assert ticket.resolved_at is not None and ticket.resolved_by == "agent"
    assert (ticket.resolved_at - result.injected_at).total_seconds() == pytest.approx(
        result.ttm_seconds
    )
    # Two commands, one of which changes state; the session is the transcript.
    assert (result.commands, result.state_changing, result.steps) == (2, 1, 3)
    assert result.sessions and store.session(result.sessions[0]).ticket_id == ticket.id
    assert result.error_rate is not None and result.error_rate <= 0.05
    assert result.scenario_sha256 == scenario.load(path).sha256


def test_a_model_that_only_says_it_is_done_fails_unverified(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    path = write(tmp_path, "kill-etcd3", time_limit=45, **KILL_ETCD3)
    spec = scripted(tmp_path / "liar.yaml", {"text": "Everything is fine now."})
    result = trial(settings, store, path, spec)
    assert result.outcome == TrialOutcome.FAILED
    assert f"the agent said it had fixed #{result.tickets[0]}" in result.why
    assert "the monitor never confirmed it" in result.why
    assert result.ttd_seconds is not None and result.ttm_seconds is None
    assert result.commands == 0


def test_a_fix_that_breaks_another_member_fails_with_the_regression_named(
    settings: Settings, store: Store, home: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, "kill-etcd3", **KILL_ETCD3)
    spec = scripted(tmp_path / "clumsy.yaml", shell(supervisorctl(home, "start etcd3")),
                    shell(supervisorctl(home, "stop etcd1")), {"text": "Fixed etcd3."})  # fmt: skip
    result = trial(settings, store, path, spec)
    assert result.outcome == TrialOutcome.FAILED
    assert result.why == (
        "regression: etcd:member_down:etcd1 broke after the agent's first state-changing command"
    )


def test_without_an_agent_a_fault_that_heals_by_itself_succeeds(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    path = write(tmp_path, "pause-leader", faults=[{"fault": "pause", "target": "leader",
                 "duration": 6}], expect={"tickets": ["member_down"], "within": 20})  # fmt: skip
    result = trial(settings, store, path, runs.NONE)
    assert result.outcome == TrialOutcome.SUCCESS, result.why
    assert result.sessions == [] and result.commands == 0
    assert result.ttd_seconds is not None and result.ttm_seconds is not None
    assert result.ttm_seconds > 6  # not before the fault reverted
    leader = result.targets["leader"]
    assert {store.ticket(t).target for t in result.tickets} >= {leader}
    assert all(store.ticket(t).resolved_by == "monitor" for t in result.tickets)


def test_without_an_agent_a_killed_follower_times_out(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    kill = [{"fault": "kill", "target": "follower"}]
    expect = {"tickets": ["member_down"], "within": 15}
    path = write(tmp_path, "kill-follower", time_limit=15, faults=kill, expect=expect)
    result = trial(settings, store, path, runs.NONE)
    assert result.outcome == TrialOutcome.TIMEOUT
    assert f"member_down on {result.targets['follower']}" in result.why
    assert result.ttd_seconds is not None and result.ttm_seconds is None


def test_a_noop_scenario_opens_no_ticket_and_counts_as_a_true_negative(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    path = write(tmp_path, "quiet", expect={"within": 8})
    result = trial(settings, store, path, runs.NONE)
    assert result.outcome == TrialOutcome.SUCCESS, result.why
    assert (result.tickets, result.false_positives, result.ttd_seconds) == ([], 0, None)
    assert "true negative" in result.why


def test_the_agent_cannot_find_the_scenario_or_its_fault_from_its_sandbox(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    """The scenario's name and its script's text are unique words. The scenario lies under
    /usr, which the sandbox binds (a system-wide install keeps the library there), and the
    agent greps every file its sandbox can read (but /proc and /sys, where its own grep is)
    for them: it finds none, although the fault is in force."""
    name, marker = "hidden-scenario-x7q2", "fault-marker-k9w4"
    folder = Path(tempfile.mkdtemp(prefix="operator-test-", dir="/usr/local/share"))
    folder.chmod(0o755)  # as readable to the lab user as an installed library
    try:
        path = write(folder, name, faults=[{
            "fault": "script", "target": "etcd2",
            "run": f"# {marker}\nsupervisorctl -c $LAB_DIR/supervisord.conf stop $NODE",
            "revert": f"# {marker}\nsupervisorctl -c $LAB_DIR/supervisord.conf start $NODE",
        }], expect={"tickets": ["member_down"], "within": 30})  # fmt: skip
        look = (
            f"grep -rlI --exclude-dir=proc --exclude-dir=sys -e {name} -e {marker} / "
            "2>/dev/null; ls -d /usr/local/share/operator-test-* 2>&1; echo grep-finished"
        )
        spec = scripted(tmp_path / "search.yaml", shell(look), {"text": "ESCALATE: looked"})
        result = trial(settings, store, path, spec)
    finally:
        shutil.rmtree(folder)
    assert result.outcome == TrialOutcome.ESCALATED, result.why
    [session] = result.sessions
    entries = store.audit_entries(session)
    [output] = [e.content for e in entries if e.kind == "tool_result" and e.tool == "shell"]
    assert "grep-finished" in output and str(folder) in output  # its folder is there
    assert name not in output and marker not in output
    # Nor does the platform's snapshot, which ran in the same sandbox, show either.
    snapshot = [e.content for e in entries if e.tool == "snapshot"]
    assert snapshot and not any(name in text or marker in text for text in snapshot)


def test_the_script_fault_runs_with_the_node_in_its_environment_and_reverts(
    home: Path,
) -> None:
    with running_lab(home, name="script-lab") as lab:
        data = lab.path / "data" / "etcd2"
        run = 'printf "%s %s %s %s" "$NODE" "$NODE_CONF" "$LAB_DIR" "$(id -un)" > "$NODE_DATA/x"'
        injection = chaos.inject(
            lab, "script", "etcd2", {"run": run, "revert": 'rm "$NODE_DATA/x"'}
        )
        seen = lab.in_mounts("cat", str(data / "x"))
        assert seen == f"etcd2 {lab.path}/conf/etcd2.yml {lab.path} operator-lab"
        assert [i.fault for i in Injections(lab.path).active()] == ["script"]
        assert Injections(lab.path).active()[0].params["run"] == run
        chaos.revert(lab, injection.id)
        assert "x" not in lab.in_mounts("ls", str(data)).split()
        assert Injections(lab.path).active() == []

        as_root = chaos.inject(lab, "script", "etcd1", {"run": "id -u > /dev/null", "user": "root"})
        with pytest.raises(LabError, match="no revert script"):
            chaos.revert(lab, as_root.id)  # only a reset undoes it
        with pytest.raises(LabError, match="failed"):
            chaos.inject(lab, "script", "etcd3", {"run": "exit 3"})


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"faults": [{"fault": "explode", "target": "etcd1"}]}, "no fault named 'explode'"),
        ({"faults": [{"fault": "kill", "target": "etcd9"}]}, "no target 'etcd9'"),
        ({"faults": [{"fault": "kill"}]}, "kill needs a target"),
        ({"faults": [{"fault": "loss", "target": "etcd1", "params": {"pct": 5}}]},
         "takes no parameter pct"),
        ({"faults": [{"fault": "kill", "target": "etcd1", "run": "x"}]}, "script fault only"),
        ({"faults": [{"fault": "script", "target": "etcd1"}]}, "needs a `run` script"),
        ({"expect": {"tickets": ["member_down"]}}, "cannot expect tickets"),
        ({"faults": [{"fault": "kill", "target": "etcd1"}]}, "expect.tickets names none"),
        ({"expect": {"tickets": ["nonsense"]}}, "no invariant 'nonsense'"),
        ({"time_limit": -1}, "time_limit"),
        ({"subject": "nosuch"}, "nosuch"),
        ({"colour": "red"}, "colour"),
    ],
)  # fmt: skip
def test_a_bad_scenario_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, keys: dict[str, Any], problem: str
) -> None:
    path = write(tmp_path, "bad", **keys)
    with pytest.raises(ScenarioError, match=r"bad\.yaml") as caught:
        scenario.load(path)
    assert problem in str(caught.value)


def test_every_shipped_scenario_loads_and_the_library_is_complete() -> None:
    found = scenario.find([])
    assert len(found) >= 40
    assert {s.subject for s in found} == {"etcd", "postgres", "ratelimiter", "redis"}
    assert sum(1 for s in found if s.noop) >= 2
    assert all(s.fix for s in found), [s.name for s in found if not s.fix]
    assert all(s.path.stem == s.name for s in found)
    used = {step.fault for s in found for step in s.faults}
    assert "script" in used


def test_runs_are_listed_shown_compared_and_reported(
    settings: Settings, store: Store, home: Path, tmp_path: Path
) -> None:
    """Two runs of the same two scenarios (no agent), two trials at once in two labs; the
    CLI reads them back."""
    folder = tmp_path / "mine"
    folder.mkdir()
    write(folder, "quiet", expect={"within": 3})
    write(folder, "pause-leader", faults=[{"fault": "pause", "target": "leader",
          "duration": 4}], expect={"tickets": ["member_down"], "within": 20})  # fmt: skip
    env = {"OPERATOR_DB": settings.db}
    ids = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "operator_ai", "eval", "run", "--scenarios", str(folder),
             "--model", "none", "--parallel", "2", "--json"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OPERATOR_HOME": str(home), **env},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = [yaml.safe_load(line) for line in done.stdout.splitlines()]
        assert [line["kind"] for line in lines] == ["trial", "trial", "run"]
        ids.append(lines[-1]["id"])
        # Two labs at once, one trial each; no ticket is shared.
        assert sorted(line["lab"] for line in lines[:2]) == [
            f"eval-{ids[-1]}-1",
            f"eval-{ids[-1]}-2",
        ]
        scopes = {store.ticket(t).scope for line in lines[:2] for t in line["tickets"]}
        assert scopes == {f"eval/{ids[-1]}/pause-leader/1"}
    listed = run_cli("eval", "list", "--json", home=home, env=env)
    assert {r["id"] for r in yaml.safe_load(listed.stdout)} >= set(ids)
    shown = run_cli("eval", "show", str(ids[0]), "--json", home=home, env=env)
    assert {t["scenario"] for t in yaml.safe_load(shown.stdout)["trials"]} == {
        "pause-leader",
        "quiet",
    }
    compared = run_cli("eval", "compare", str(ids[0]), str(ids[1]), "--json", home=home, env=env)
    comparison = yaml.safe_load(compared.stdout)
    assert comparison["notes"] == []
    rows = {row["scenario"]: row for row in comparison["scenarios"]}
    assert set(rows) == {"pause-leader", "quiet"}
    assert rows["quiet"]["a"]["success_rate"] == rows["quiet"]["b"]["success_rate"] == 1.0
    assert rows["quiet"]["success_p"] == 1.0 and rows["quiet"]["changes"] == []
    table = run_cli("eval", "compare", str(ids[0]), str(ids[1]), home=home, env=env)
    assert table.returncode == 0 and "pause-leader" in table.stdout
    page = tmp_path / "report.html"
    made = run_cli("eval", "report", str(ids[0]), "--html", str(page), home=home, env=env)
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    assert "pause-leader" in text and 'id="trial-' in text
    missing = run_cli("eval", "show", "999", home=home, env=env)
    assert missing.returncode == 1 and "no eval run 999" in missing.stderr


def test_ctrl_c_stops_a_run_cleans_up_and_keeps_no_half_trial(
    settings: Settings, store: Store, home: Path, tmp_path: Path
) -> None:
    write(tmp_path, "long-quiet", expect={"within": 120}, time_limit=150)
    child = subprocess.Popen(
        [sys.executable, "-m", "operator_ai", "eval", "run", "--scenarios", str(tmp_path),
         "--model", "none", "--json"],
        env={**os.environ, "OPERATOR_HOME": str(home), "OPERATOR_DB": settings.db},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Stop it once its trial watches the quiet cluster (the ticket scope exists then).
        deadline = time.monotonic() + 120
        while not any(Path(home, "labs").glob("eval-*/load.json")):
            if child.poll() is not None:
                raise AssertionError(f"the run ended early: {child.communicate()[1]}")
            assert time.monotonic() < deadline, "no eval lab ran its load within 120 s"
            time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    [summary] = [yaml.safe_load(line) for line in out.splitlines()]
    assert summary["kind"] == "run" and summary["stopped"] is True
    assert store.eval_trials(summary["id"]) == []
    assert store.eval_run(summary["id"]).ended_at is not None
    assert not any(Path(home, "labs").glob("eval-*/lab.json"))  # its lab is down
    assert "stopping" in err
