"""PostgreSQL under Patroni against a real lab: three etcd members as the DCS and three
Patroni members, each running its own PostgreSQL as the lab user, under supervisord; the real
monitor, and psycopg with `target_session_attrs=read-write` as the load. Patroni fails over a
crashed primary and rewinds it when it returns; what it cannot do (without a DCS, in
maintenance mode) and what it does not watch (a forgotten slot, leaked connections, a
transaction holding locks) opens the right ticket."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_helpers import scripted, shell
from lab_helpers import (
    ROOT,
    cycle_for,
    cycle_until,
    lab_home,
    lab_load,
    live,
    running_lab,
    running_monitor,
    wait_for,
)
from operator_ai.lab import Lab
from operator_ai.lab import injections as chaos
from operator_ai.lab.load import read_workload
from operator_ai.monitor import Monitor
from operator_ai.store import AuditKind, Outcome, Status, Store
from operator_ai.subjects.postgres.faults import postmaster
from operator_ai.subjects.postgres.nodes import config_path, connect

pytestmark = pytest.mark.skipif(shutil.which("patroni") is None, reason="patroni is not installed")
netns_only = pytest.mark.skipif(not ROOT, reason="netns mode (and this fault) needs root")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_home() as home, running_lab(home, "postgres") as lab:
        yield lab


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'operator.db'}") as store:
        yield store


@pytest.fixture
def monitor(lab: Lab, store: Store) -> Iterator[Monitor]:
    try:
        yield Monitor(store, lab.subject, lab.cluster, interval=1.0)
    finally:
        lab.heal(timeout=60)
        wait_for(lambda: streaming(lab) == 2, timeout=60, what="both replicas streaming again")


@pytest.fixture
def load(lab: Lab) -> Iterator[subprocess.Popen[str]]:
    """`operator lab load --lab postgres` at 40 transactions/s, as a user would run it."""
    with lab_load(lab, 40) as proc:
        yield proc


def streaming(lab: Lab) -> int:
    seen = lab.observe(timeout=2.0).nodes
    return sum(1 for n in seen.values() if (n.get("receiver") or {}).get("status") == "streaming")


def writes(lab: Lab) -> dict[str, Any]:
    stats = read_workload(lab.path)
    assert stats is not None, "the load stopped writing its stats"
    return dict(stats["writes"])


def ever(store: Store, key: str) -> bool:
    return any(t.key == key for t in store.tickets())


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_each_member_runs_its_postgresql_as_the_lab_user(lab: Lab) -> None:
    seen = lab.observe(timeout=2.0)
    roles = sorted(seen.nodes[f"pg{i}"]["role"] for i in (1, 2, 3))
    assert roles == ["primary", "replica", "replica"]
    assert all(seen.nodes[f"dcs{i}"]["healthy"] for i in (1, 2, 3))
    assert seen.cluster["leader"] in ("pg1", "pg2", "pg3") and seen.cluster["probe"]["ok"]
    # PostgreSQL refuses root: Patroni starts it as the lab user, as every node runs.
    user = pwd.getpwnam(lab.state.user).pw_uid
    for member in ("pg1", "pg2", "pg3"):
        server = postmaster(lab, member)
        assert server is not None, f"no PostgreSQL found for {member}"
        assert os.stat(f"/proc/{server.pid}").st_uid == user
        assert os.stat(f"/proc/{lab.cluster.pid(member)}").st_uid == user  # its Patroni
    conf = config_path(lab.path, "pg1")
    assert "use_pg_rewind" in conf.read_text() and conf.stat().st_uid == user


def test_a_healthy_lab_under_load_breaks_nothing(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    """Every look for 12 s breaks no invariant at all (so no grace period hides one)."""
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        observation = lab.observe(timeout=2.0)
        assert lab.subject.check(observation, []) == []
        time.sleep(0.5)
    assert writes(lab)["acked"] > 300 and writes(lab)["lost"] == 0


def test_a_crashed_primary_fails_over_and_rejoins_as_a_streaming_replica(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    old = lab.leader()
    assert old is not None
    injection = chaos.inject(lab, "crash", old, {})
    cycle_until(monitor, lambda: live(monitor.store, f"postgres:member_down:{old}"),
                what="member_down")  # fmt: skip
    cycle_until(monitor, lambda: lab.leader() not in (None, old), timeout=40, what="a failover")
    # Past no_primary's grace (20 s) from the crash: Patroni fixed it in time.
    cycle_for(monitor, 22 - (time.time() - _at(injection.injected_at)))
    assert not ever(monitor.store, "postgres:no_primary:cluster")
    assert not ever(monitor.store, "postgres:multiple_primaries:cluster")

    chaos.revert(lab, injection.id)  # the old primary starts again: rewound, it follows
    cycle_until(monitor, lambda: not live(monitor.store, f"postgres:member_down:{old}"),
                timeout=60, what="member_down to clear")  # fmt: skip
    wait_for(lambda: (lab.observe().nodes[old].get("receiver") or {}).get("status") == "streaming",
             timeout=60, what=f"{old} streaming from the new primary")  # fmt: skip
    assert lab.observe().nodes[old]["role"] == "replica"


def test_a_patroni_killed_alone_leaves_two_primaries(lab: Lab, monitor: Monitor) -> None:
    """The generic kill takes Patroni and leaves its PostgreSQL running, still a primary,
    while another member takes the lapsed lock."""
    old = lab.leader()
    assert old is not None
    chaos.inject(lab, "kill", old, {})
    cycle_until(monitor, lambda: live(monitor.store, "postgres:multiple_primaries:cluster"),
                timeout=60, what="multiple_primaries")  # fmt: skip
    ticket = live(monitor.store, "postgres:multiple_primaries:cluster")
    assert ticket is not None and old in ticket.message


def test_without_a_dcs_quorum_the_primary_goes_read_only(lab: Lab, monitor: Monitor) -> None:
    injection = chaos.inject(lab, "dcs_quorum_loss", "cluster", {})
    cycle_until(monitor, lambda: live(monitor.store, "postgres:dcs_unhealthy:dcs"),
                what="dcs_unhealthy")  # fmt: skip
    cycle_until(monitor, lambda: live(monitor.store, "postgres:no_primary:cluster"),
                timeout=60, what="no_primary")  # fmt: skip
    ticket = live(monitor.store, "postgres:no_primary:cluster")
    assert ticket is not None and "read-only" in ticket.message, ticket.message

    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: not live(monitor.store, "postgres:no_primary:cluster")
                and not live(monitor.store, "postgres:dcs_unhealthy:dcs"), timeout=60,
                what="both to clear")  # fmt: skip


def test_maintenance_mode_left_on_keeps_a_crashed_primary_down(lab: Lab, monitor: Monitor) -> None:
    injection = chaos.inject(lab, "maintenance_left_on", "cluster", {})
    cycle_until(monitor, lambda: live(monitor.store, "postgres:cluster_paused:cluster")
                and live(monitor.store, "postgres:no_primary:cluster"), timeout=60,
                what="cluster_paused and no_primary")  # fmt: skip
    cycle_for(monitor, 5)  # nothing fails over while paused
    assert live(monitor.store, "postgres:no_primary:cluster")
    assert lab.leader() is None
    # Replicas with no primary to follow are that one breach, not one each.
    replicas = {"pg1", "pg2", "pg3"} - {injection.state["primary"]}
    assert not any(ever(monitor.store, f"postgres:replica_not_streaming:{r}") for r in replicas)


def test_an_orphaned_slot_opens_wal_retention_before_the_disk_fills(
    lab: Lab, monitor: Monitor
) -> None:
    chaos.inject(lab, "orphan_slot", "cluster", {"wal_mb": "96"})
    primary = lab.leader()
    cycle_until(monitor, lambda: live(monitor.store, f"postgres:wal_retention:{primary}"),
                what="wal_retention")  # fmt: skip
    ticket = live(monitor.store, f"postgres:wal_retention:{primary}")
    assert ticket is not None and "'barman'" in ticket.message
    seen = lab.observe()
    if disk := seen.cluster["disk_bytes"]:  # netns mode: each data dir is a tmpfs of this size
        assert seen.nodes[str(primary)]["data_bytes"] < 0.8 * disk


def test_a_connection_leak_exhausts_connections(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    chaos.inject(lab, "connection_leak", "cluster", {})
    primary = lab.leader()
    cycle_until(monitor, lambda: live(monitor.store, f"postgres:connections_exhausted:{primary}"),
                what="connections_exhausted")  # fmt: skip


def test_a_long_transaction_holding_a_lock_is_found(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    chaos.inject(lab, "long_transaction", "cluster", {})
    primary = lab.leader()
    cycle_until(monitor, lambda: live(monitor.store, f"postgres:long_transaction:{primary}"),
                timeout=40, what="long_transaction")  # fmt: skip
    ticket = live(monitor.store, f"postgres:long_transaction:{primary}")
    assert ticket is not None and "nightly-report" in ticket.message
    cycle_until(monitor, lambda: live(monitor.store, "postgres:workload_errors:workload"),
                what="the blocked writes to fail")  # fmt: skip


@netns_only
def test_a_replica_pointed_at_a_wrong_host_stops_streaming(lab: Lab, monitor: Monitor) -> None:
    injection = chaos.inject(lab, "broken_replica_conninfo", "follower", {})
    replica, upstream = injection.target, injection.state["upstream"]
    cycle_until(monitor, lambda: live(monitor.store, f"postgres:replica_not_streaming:{replica}"),
                timeout=40, what="replica_not_streaming")  # fmt: skip
    assert injection.state["address"] in config_path(lab.path, upstream).read_text()
    # Not merely streaming from the other replica: from nowhere at all.
    assert (lab.observe().nodes[replica].get("receiver") or {}).get("status") != "streaming"
    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: not live(monitor.store,
                f"postgres:replica_not_streaming:{replica}"), timeout=40,
                what="replica_not_streaming to clear")  # fmt: skip


def test_a_clean_switchover_loses_no_commit(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    old = lab.leader()
    assert old is not None
    node = lab.cluster.node(old)
    httpx.post(f"http://{node.address}:{node.ports['api']}/switchover",
               json={"leader": old}, timeout=30).raise_for_status()  # fmt: skip
    cycle_until(monitor, lambda: lab.leader() not in (None, old), timeout=60, what="a new leader")
    acked = writes(lab)["acked"]
    # Every write acked so far read back from the new primary, twice (a loss needs two looks).
    cycle_until(monitor, lambda: (writes(lab).get("checked_at") or 0) > time.time() - 1
                and writes(lab)["acked"] > acked + 200, timeout=60,
                what="the checker past the switchover")  # fmt: skip
    assert writes(lab)["lost"] == 0
    assert not ever(monitor.store, "postgres:lost_writes:workload")


def test_the_agent_resumes_a_paused_cluster(lab: Lab, store: Store, tmp_path: Path) -> None:
    """`operator agent run` with a scripted model, in the bwrap sandbox: maintenance mode
    was left on and the primary crashed; the agent resumes the cluster and starts the old
    primary, and the monitor confirms every ticket of the incident."""
    home = lab.path.parent.parent
    db = f"sqlite:///{tmp_path / 'operator.db'}"
    try:
        with running_monitor(store, lab):
            injection = chaos.inject(lab, "maintenance_left_on", "cluster", {})
            old = injection.state["primary"]
            wait_for(lambda: live(store, "postgres:cluster_paused:cluster")
                     and live(store, "postgres:no_primary:cluster")
                     and live(store, f"postgres:member_down:{old}"), timeout=60,
                     what="the incident's tickets")  # fmt: skip
            ctl = f"patronictl -c {config_path(lab.path, 'pg1')}"
            spec = scripted(
                tmp_path / "fix.yaml",
                shell(f"{ctl} resume --wait", "maintenance mode is on; resume it"),
                shell(f"supervisorctl -c {lab.path}/supervisord.conf start {old}", "start it"),
                {"text": f"Resumed the cluster and started {old}."},
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
            env.update(OPERATOR_HOME=str(home), OPERATOR_DB=db)
            done = subprocess.run(
                [sys.executable, "-m", "operator_ai", "agent", "run", "--once", "--model", spec],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        ticket = next(t for t in store.tickets() if t.key == "postgres:cluster_paused:cluster")
        assert ticket.status == Status.RESOLVED
        [session] = store.sessions(ticket.id)
        assert session.outcome == Outcome.RESOLVED
        entries = store.audit_entries(session.id)
        looked = [e for e in entries if e.tool == "snapshot" and e.kind == AuditKind.TOOL_RESULT]
        snapshot = "\n".join(e.content for e in looked)
        assert "Maintenance mode: on" in snapshot, snapshot[:3000]  # patronictl list, sandboxed
        assert lab.leader() is not None
    finally:
        lab.heal(timeout=60)


def test_the_briefing_names_the_parts_and_no_fix(lab: Lab) -> None:
    text = lab.subject.briefing(lab.cluster)
    for part in ("pg1", "dcs3", "patronictl -c", "psql 'host=", "supervisorctl", "/cluster"):
        assert part in text
    for fix in ("pg_terminate_backend", "drop_replication_slot", "resume the", "start the"):
        assert fix not in text  # no playbook


@netns_only
def test_the_database_superuser_runs_commands_as_the_lab_user_and_no_more(lab: Lab) -> None:
    """The agent is PostgreSQL's superuser, so it can make the server run a command
    (`COPY ... FROM PROGRAM`), outside the sandbox. The command runs as the lab user, as the
    server does, unable to gain privileges (no setuid program lifts it): the operator's store
    (0600, root's) stays out of its reach."""
    home = lab.path.parent.parent
    with Store(f"sqlite:///{home / 'operator.db'}"):
        pass
    primary = lab.leader()
    assert primary is not None
    with connect(lab.cluster, lab.cluster.node(primary), 10) as conn:
        conn.execute("CREATE TEMP TABLE said (line text)")
        conn.execute(
            f"COPY said FROM PROGRAM 'id -u; cat {home}/operator.db 2>&1 | head -c 200; "
            "grep NoNewPrivs /proc/self/status | cut -f2'"
        )
        said = [row[0] for row in conn.execute("SELECT line FROM said").fetchall()]
    assert said[0] == str(pwd.getpwnam(lab.state.user).pw_uid)
    assert "Permission denied" in said[1] and "SQLite" not in " ".join(said)
    assert said[-1] == "1"  # NoNewPrivs
