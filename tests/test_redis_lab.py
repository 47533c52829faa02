"""Redis with Sentinel against a real lab: three redis-server and three redis-sentinel
processes under supervisord, each sentinel in its server's namespace, the real monitor, and
redis-py's Sentinel clients as the load. Sentinel fails over a killed primary by itself; what
it cannot do (a lost quorum, a split brain's writes, full memory, a password nobody told the
clients) opens the right ticket."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

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
from operator_ai.subjects.redis.nodes import connect

pytestmark = pytest.mark.skipif(
    shutil.which("redis-sentinel") is None, reason="redis-sentinel is not installed"
)
netns_only = pytest.mark.skipif(not ROOT, reason="netns mode (and this fault) needs root")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_home() as home, running_lab(home, "redis") as lab:
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


@pytest.fixture
def load(lab: Lab) -> Iterator[subprocess.Popen[str]]:
    """`operator lab load --lab redis` at 50 writes/s, as a user would run it."""
    with lab_load(lab, 50) as proc:
        yield proc


def role(lab: Lab, node: str) -> str | None:
    seen = lab.observe(timeout=2.0).nodes[node]
    return seen.get("role")


def writes(lab: Lab) -> dict[str, Any]:
    stats = read_workload(lab.path)
    assert stats is not None, "the load stopped writing its stats"
    return dict(stats["writes"])


def ever(store: Store, key: str) -> bool:
    return any(t.key == key for t in store.tickets())


@netns_only
def test_each_sentinel_runs_beside_its_server(lab: Lab) -> None:
    nodes = {n.name: n for n in lab.cluster.nodes}
    for i in (1, 2, 3):
        server, sentinel = nodes[f"redis{i}"], nodes[f"sentinel{i}"]
        assert (sentinel.address, sentinel.netns) == (server.address, server.netns)
        assert (server.ports, sentinel.ports) == ({"redis": 6379}, {"sentinel": 26379})
    assert len({nodes[f"redis{i}"].address for i in (1, 2, 3)}) == 3
    # The configs are the lab user's to edit, and Sentinel rewrites its own.
    conf = lab.path / "conf" / "sentinel1.conf"
    assert "sentinel monitor lab" in conf.read_text()
    if ROOT:
        assert conf.stat().st_uid != 0


def test_a_healthy_lab_under_load_opens_no_ticket(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    cycle_for(monitor, 17)  # past every grace period (15 s at most)
    assert [t.key for t in monitor.store.live()] == []
    assert writes(lab)["acked"] > 500 and writes(lab)["lost"] == 0


def test_a_killed_primary_fails_over_and_comes_back_as_a_replica(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    old = lab.leader()
    assert old is not None
    injection = chaos.inject(lab, "kill", "leader", {})
    cycle_until(monitor, lambda: live(monitor.store, f"redis:node_down:{old}"), what="node_down")
    cycle_until(monitor, lambda: lab.leader() not in (None, old), what="a failover", timeout=40)
    # Well past no_writable_primary's grace (15 s) from the kill: Sentinel fixed it in time.
    cycle_for(monitor, 19 - (time.time() - _at(injection.injected_at)))
    assert not ever(monitor.store, "redis:no_writable_primary:cluster")
    chaos.revert(lab, injection.id)
    key = f"redis:node_down:{old}"
    cycle_until(monitor, lambda: not live(monitor.store, key), what=f"{key} cleared")
    wait_for(lambda: role(lab, old) == "replica", timeout=40, what=f"{old} to rejoin as a replica")


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@netns_only
def test_a_split_brain_loses_the_writes_the_old_primary_took(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    """The partitioned primary keeps taking the clients' writes while the others fail over;
    once it rejoins as a replica they are gone. The monitor's count is the generator's."""
    old = lab.leader()
    assert old is not None
    address = f"{lab.cluster.node(old).address}:6379"
    before = writes(lab)["acked"]
    injection = chaos.inject(lab, "split_brain", "leader", {})
    injected = _at(injection.injected_at)
    wait_for(lambda: (read_workload(lab.path) or {}).get("updated_at", 0) > injected + 0.1,
             what="the load's stats after the partition")  # fmt: skip
    after_inject = writes(lab)["acked_by"].get(address, 0)
    cycle_until(monitor, lambda: live(monitor.store, "redis:split_brain:cluster"),
                what="split_brain", timeout=40)  # fmt: skip
    assert writes(lab)["lost"] == 0, "the old primary still holds them: nothing is lost yet"
    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: live(monitor.store, "redis:lost_writes:workload"),
                what="lost_writes", timeout=60)  # fmt: skip
    wait_for(lambda: role(lab, old) == "replica", timeout=40, what=f"{old} demoted")
    demoted = time.time()
    wait_for(lambda: (writes(lab)["checked_at"] or 0) > demoted + 5, what="two later checks")
    seen = writes(lab)
    # Every write the old primary acknowledged from the partition on is lost (the load's
    # stats, read just after the injection, bound it from below), and no write acknowledged
    # before the partition is (bar one still replicating).
    assert seen["acked_by"][address] - after_inject <= seen["lost"] <= seen["acked"] - before + 5
    assert seen["lost"] > 50
    ticket = live(monitor.store, "redis:lost_writes:workload")
    assert ticket is not None and ticket.evidence["lost"] <= seen["lost"]
    assert all(w["acked_at"] >= injected - 1 for w in seen["lost_examples"])
    # And the cluster agrees: no server holds any of them.
    keys = [f"load:{seen['run']}:{seq}" for seq in seen["lost_seqs"][:200]]
    for node in (n for n in lab.cluster.nodes if "redis" in n.ports):
        with connect(node, 2.0) as client:
            assert client.mget(keys) == [None] * len(keys)


def test_without_a_sentinel_quorum_a_killed_primary_stays_unwritable(
    lab: Lab, monitor: Monitor
) -> None:
    old = lab.leader()
    quorum = chaos.inject(lab, "sentinel_quorum", "cluster", {})
    assert len(quorum.state["stopped"]) == 2
    chaos.inject(lab, "kill", "leader", {})
    key = "redis:no_writable_primary:cluster"
    cycle_until(monitor, lambda: live(monitor.store, key), what=key, timeout=40)
    cycle_for(monitor, 10)
    assert live(monitor.store, key) and lab.leader() == old, "no failover is possible"
    assert live(monitor.store, "redis:sentinels_disagree:cluster")


def test_full_memory_is_memory_pressure(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    primary = lab.leader()
    injection = chaos.inject(lab, "maxmemory", "cluster", {})
    key = f"redis:memory_pressure:{primary}"
    cycle_until(monitor, lambda: live(monitor.store, key), what=key)
    cycle_until(monitor, lambda: live(monitor.store, "redis:workload_errors:workload"),
                what="the refused writes")  # fmt: skip
    assert "maxmemory" in (read_workload(lab.path) or {}).get("last_error", "")
    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: not live(monitor.store, key), what=f"{key} cleared")


def test_a_paused_sentinel_is_down_but_the_others_still_agree(lab: Lab, monitor: Monitor) -> None:
    injection = chaos.inject(lab, "pause", "sentinel3", {})
    cycle_until(monitor, lambda: live(monitor.store, "redis:node_down:sentinel3"), what="down")
    cycle_for(monitor, 12)  # past sentinels_disagree's grace (10 s)
    assert not ever(monitor.store, "redis:sentinels_disagree:cluster")
    chaos.revert(lab, injection.id)


def test_a_password_the_clients_lack_stops_the_writes(
    lab: Lab, monitor: Monitor, load: subprocess.Popen[str]
) -> None:
    injection = chaos.inject(lab, "auth_changed", "cluster", {})
    for key in ("redis:no_writable_primary:cluster", "redis:workload_errors:workload"):
        cycle_until(monitor, lambda k=key: live(monitor.store, k), what=key, timeout=40)
    primary = lab.leader() or "redis1"
    assert "requirepass" in (lab.path / "conf" / f"{primary}.conf").read_text()
    chaos.revert(lab, injection.id)
    key = "redis:no_writable_primary:cluster"
    cycle_until(monitor, lambda: not live(monitor.store, key), what=f"{key} cleared")


@netns_only
def test_a_slow_replica_link_is_an_unhealthy_replica(lab: Lab, monitor: Monitor) -> None:
    injection = chaos.inject(lab, "replica_lag", "follower", {})
    key = f"redis:replica_unhealthy:{injection.target}"
    cycle_until(monitor, lambda: live(monitor.store, key), what=key, timeout=40)
    assert not live(monitor.store, f"redis:node_down:{injection.target}")
    chaos.revert(lab, injection.id)
    cycle_until(monitor, lambda: not live(monitor.store, key), what=f"{key} cleared", timeout=60)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
@netns_only
def test_the_agent_restarts_a_killed_primary_and_it_rejoins_as_a_replica(
    lab: Lab, store: Store, tmp_path: Path
) -> None:
    """`operator agent run` with a scripted model, in the bwrap sandbox: Sentinel fails over,
    the agent starts the old primary, the monitor confirms every ticket of the incident."""
    home = lab.path.parent.parent
    db = f"sqlite:///{tmp_path / 'operator.db'}"
    old = lab.leader()
    assert old is not None
    try:
        with running_monitor(store, lab):
            chaos.inject(lab, "kill", old, {})
            wait_for(lambda: live(store, f"redis:node_down:{old}"), what="node_down")
            spec = scripted(
                tmp_path / "fix.yaml",
                shell(f"supervisorctl -c {lab.path}/supervisord.conf start {old}", "start it"),
                {"text": f"Started {old}; Sentinel makes it a replica of the new primary."},
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
            env.update(OPERATOR_HOME=str(home), OPERATOR_DB=db)
            done = subprocess.run(
                [sys.executable, "-m", "operator_ai", "agent", "run", "--once", "--model", spec],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        ticket = next(t for t in store.tickets() if t.key == f"redis:node_down:{old}")
        assert ticket.status == Status.RESOLVED
        [session] = store.sessions(ticket.id)
        assert session.outcome == Outcome.RESOLVED
        entries = store.audit_entries(session.id)
        looked = [e for e in entries if e.tool == "snapshot" and e.kind == AuditKind.TOOL_RESULT]
        snapshot = "\n".join(e.content for e in looked)
        # The platform's look, in the sandbox: the sentinels' views and each server's role.
        assert "sentinel1: names" in snapshot and "role:" in snapshot, snapshot[:3000]
        wait_for(lambda: role(lab, old) == "replica", timeout=40, what=f"{old} a replica")
    finally:
        lab.heal(timeout=60)


def test_the_briefing_names_the_parts_and_no_fix(lab: Lab) -> None:
    text = lab.subject.briefing(lab.cluster)
    sentinel = lab.cluster.node("sentinel1")
    cli = f"redis-cli -h {sentinel.address} -p {sentinel.ports['sentinel']}"
    for part in ("redis1", "sentinel3", cli, "supervisorctl", "conf"):
        assert part in text
    assert "min-replicas" not in text and "replicaof" not in text.lower()  # no playbook
    commands = lab.subject.diagnostics(lab.cluster, ["redis2"])
    assert any(str(lab.path / "logs" / "redis2.log") in c for c in commands)
    assert not any(str(lab.path / "logs" / "redis1.log") in c for c in commands)
