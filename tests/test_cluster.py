"""The `Cluster` seam without a lab: three etcd processes this test starts itself, described
by hand (addresses, and a control of the test's own), watched by the real monitor."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_helpers import cycle_until, live
from operator_ai.core import RUNNING, Cluster, Node, NodeStatus
from operator_ai.errors import SubjectUnreachable
from operator_ai.lab.network import free_port
from operator_ai.monitor import Monitor
from operator_ai.plugins import load_subject
from operator_ai.store import Store

ETCD = load_subject("etcd")


class Processes:
    """A NodeControl over processes started with Popen: the least a cluster needs."""

    def __init__(self, commands: dict[str, list[str]], logs: Path) -> None:
        self.commands, self.logs = commands, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def status(self, node: str) -> NodeStatus:
        proc = self.running.get(node)
        if proc is None or proc.poll() is not None:
            return NodeStatus(node, "STOPPED")
        return NodeStatus(node, RUNNING, proc.pid)

    def statuses(self) -> list[NodeStatus]:
        return [self.status(n) for n in self.commands]

    def start(self, node: str) -> None:
        if self.status(node).state != RUNNING:
            with open(self.logs / f"{node}.log", "ab") as log:
                self.running[node] = subprocess.Popen(self.commands[node], stdout=log, stderr=log)

    def stop(self, node: str) -> None:
        proc = self.running.pop(node, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)

    def restart(self, node: str) -> None:
        self.stop(node)
        self.start(node)

    def signal(self, node: str, sig: signal.Signals) -> int:
        proc = self.running[node]
        proc.send_signal(sig)
        return proc.pid


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = [Node(f"e{i}", "127.0.0.1", {"client": free_port(), "peer": free_port()})
             for i in (1, 2, 3)]  # fmt: skip
    initial = ",".join(f"{n.name}={n.url('peer')}" for n in nodes)
    commands = {
        n.name: ["etcd", "--name", n.name, "--data-dir", str(tmp_path / n.name),
                 "--listen-client-urls", n.url(), "--advertise-client-urls", n.url(),
                 "--listen-peer-urls", n.url("peer"), "--initial-advertise-peer-urls",
                 n.url("peer"), "--initial-cluster", initial, "--initial-cluster-token", "hand",
                 "--enable-grpc-gateway", "--heartbeat-interval", "100",
                 "--election-timeout", "1000"]
        for n in nodes
    }  # fmt: skip
    control = Processes(commands, tmp_path)
    try:
        for node in nodes:
            control.start(node.name)
        yield Cluster(subject="etcd", name="hand-built", nodes=nodes, control=control,
                      workdir=tmp_path)  # fmt: skip
    finally:
        for node in nodes:
            control.stop(node.name)


def healthy(cluster: Cluster) -> bool:
    try:
        return not ETCD.check(ETCD.observe(cluster, timeout=2.0), [])
    except SubjectUnreachable:
        return False


def test_the_monitor_watches_a_cluster_no_lab_started(cluster: Cluster, tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'operator.db'}") as store:
        monitor = Monitor(store, ETCD, cluster, interval=0.5)
        cycle_until(monitor, lambda: healthy(cluster), what="the hand-built cluster to be healthy")

        observation = ETCD.observe(cluster, timeout=2.0)
        assert {m["name"] for m in observation.cluster["members"]} == {"e1", "e2", "e3"}
        assert ETCD.leader(observation) in {"e1", "e2", "e3"}
        assert not monitor.cycle() and not store.live()

        # The cluster's own control stops a member; the monitor sees it as it would in a lab.
        cluster.control.stop("e3")
        assert cluster.pid("e3") is None
        cycle_until(monitor, lambda: live(store, "etcd:member_down:e3"), what="member_down e3")
        cluster.control.start("e3")
        cycle_until(monitor, lambda: live(store, "etcd:member_down:e3") is None, timeout=60,
                    what="member_down e3 to clear")  # fmt: skip
