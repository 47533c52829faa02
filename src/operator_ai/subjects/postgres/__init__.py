"""PostgreSQL under Patroni, with etcd as the DCS: the high-availability setup most teams run
themselves. Patroni holds the leader lock in etcd, fails over a dead primary and rewinds the
old one. What the monitor adds is noticing when that cannot happen (the DCS lost, maintenance
mode left on, a member that cannot follow) and what Patroni does not watch at all: WAL a
forgotten slot holds, connections used up, a transaction holding locks, lost commits."""

from __future__ import annotations

import glob
import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from operator_ai.core import (
    NETNS,
    PROCESS,
    Cluster,
    Fault,
    Invariant,
    Observation,
    Report,
    Stopping,
    Violation,
)
from operator_ai.lab import safefs
from operator_ai.lab.state import TMPFS_BYTES, LabState
from operator_ai.subjects.postgres import invariants, load
from operator_ai.subjects.postgres.briefing import briefing, diagnostics
from operator_ai.subjects.postgres.faults import FAULTS
from operator_ai.subjects.postgres.nodes import (
    API,
    API_PORT,
    APP,
    CLIENT,
    DATABASE,
    DCS,
    MEMBER,
    PEER,
    POSTGRES,
    POSTGRES_PORT,
    SCOPE,
    SUPERUSER,
    config_path,
)
from operator_ai.subjects.postgres.observe import observe

TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 2, 3
"""Patroni's clock, short for a lab: the leader lock lapses 10 s after its holder last
renewed it, so a dead primary is replaced within about 12 s (Patroni asks that
loop_wait + 2 * retry_timeout stay under ttl)."""
MAX_CONNECTIONS = 40
SETTINGS = {
    "max_connections": MAX_CONNECTIONS,
    "superuser_reserved_connections": 3,
    "shared_buffers": "16MB",
    "min_wal_size": "32MB",
    "max_wal_size": "64MB",
    "wal_keep_size": "0",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_log_hints": "on",
    "hot_standby_feedback": "on",
    "log_min_messages": "warning",
}
"""Small for a lab, with one-megabyte WAL segments (set at initdb) so what a slot holds back
shows within seconds of writes."""


def bin_dir() -> str:
    """The newest installed PostgreSQL's programs (Debian keeps each major version apart)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return found[-1] if found else "/usr/lib/postgresql/15/bin"


class Postgres:
    name = "postgres"
    description = "PostgreSQL under Patroni, etcd as the DCS: a primary and streaming replicas"
    invariants: Sequence[Invariant] = invariants.INVARIANTS
    default_nodes = 3
    runtimes = (PROCESS,)

    def topology(self, nodes: int) -> dict[str, dict[str, int]]:
        count = range(1, nodes + 1)
        return {f"{DCS}{i}": {CLIENT: 2379, PEER: 2380} for i in count} | {
            f"{MEMBER}{i}": {POSTGRES: POSTGRES_PORT, API: API_PORT} for i in count
        }

    def node_commands(self, lab: LabState, lab_dir: Path) -> dict[str, list[str]]:
        password = lab.extra.setdefault("password", secrets.token_hex(12))
        if lab.mode == NETNS:  # each node's data dir is a tmpfs of its own, this size
            lab.extra["disk_bytes"] = TMPFS_BYTES
        etcds = [n for n in lab.nodes if CLIENT in n.ports]
        commands = {}
        initial = ",".join(f"{n.name}={n.url(PEER)}" for n in etcds)
        for node in etcds:
            config = {
                "name": node.name,
                "data-dir": str(lab_dir / "data" / node.name),
                "listen-client-urls": node.url(CLIENT),
                "advertise-client-urls": node.url(CLIENT),
                "listen-peer-urls": node.url(PEER),
                "initial-advertise-peer-urls": node.url(PEER),
                "initial-cluster": initial,
                "initial-cluster-state": "new",
                "initial-cluster-token": lab.prefix,
                "enable-grpc-gateway": True,
                "heartbeat-interval": 100,
                "election-timeout": 1000,
                "logger": "zap",
                "log-outputs": ["stderr"],
            }
            path = lab_dir / "conf" / f"{node.name}.yml"  # JSON is YAML
            safefs.write_file(path, json.dumps(config, indent=2) + "\n")
            commands[node.name] = ["etcd", "--config-file", str(path)]

        setup = lab_dir / "conf" / "bootstrap.sql"
        safefs.write_file(setup, f"""\
-- Run once by Patroni's post_bootstrap, on the first primary.
CREATE ROLE {APP} LOGIN PASSWORD '{password}';
CREATE TABLE load_writes (run text, seq bigint, at timestamptz DEFAULT now(),
                          PRIMARY KEY (run, seq));
GRANT SELECT, INSERT ON load_writes TO {APP};
""")  # fmt: skip
        hosts = [f"{n.address}:{n.ports[CLIENT]}" for n in etcds]
        for node in (n for n in lab.nodes if POSTGRES in n.ports):
            data = lab_dir / "data" / node.name
            where = {
                "listen": f"{node.address}:{node.ports[POSTGRES]}",
                "connect_address": f"{node.address}:{node.ports[POSTGRES]}",
            }
            config = {
                "scope": SCOPE,
                "name": node.name,
                "log": {"level": "INFO"},
                "restapi": {
                    "listen": f"{node.address}:{node.ports[API]}",
                    "connect_address": f"{node.address}:{node.ports[API]}",
                },
                "etcd3": {"hosts": hosts},
                "bootstrap": {
                    "dcs": {
                        "ttl": TTL,
                        "loop_wait": LOOP_WAIT,
                        "retry_timeout": RETRY_TIMEOUT,
                        "maximum_lag_on_failover": 16 * 1024 * 1024,
                        "postgresql": {
                            "use_pg_rewind": True,
                            "use_slots": True,
                            "parameters": SETTINGS,
                        },
                    },
                    "initdb": [{"encoding": "UTF8"}, "data-checksums", {"wal-segsize": "1"}],
                    "post_bootstrap": f"psql -v ON_ERROR_STOP=1 -q -f {setup}",
                },
                "postgresql": {
                    **where,
                    "data_dir": str(data / "pgdata"),
                    "bin_dir": bin_dir(),
                    "pgpass": str(data / "pgpass"),
                    "authentication": {
                        "superuser": {"username": SUPERUSER, "password": password},
                        "replication": {"username": "replicator", "password": password},
                        "rewind": {"username": "rewinder", "password": password},
                    },
                    "parameters": {"unix_socket_directories": str(data)},
                    "pg_hba": [
                        "local all all trust",
                        "host replication replicator 0.0.0.0/0 scram-sha-256",
                        f"host {DATABASE} all 0.0.0.0/0 scram-sha-256",
                    ],
                },
            }
            path = config_path(lab_dir, node.name)
            header = "# Written by `operator lab up`. Yours to change; restart the member after.\n"
            safefs.write_file(path, header + json.dumps(config, indent=2) + "\n")
            commands[node.name] = ["patroni", str(path)]
        return commands

    def observe(self, cluster: Cluster, timeout: float) -> Observation:
        return observe(cluster, timeout)

    def check(self, observation: Observation, history: Sequence[Observation]) -> list[Violation]:
        return invariants.check(observation, history)

    def leader(self, observation: Observation) -> str | None:
        leader = observation.cluster.get("leader")
        return str(leader) if leader else None

    def faults(self) -> Mapping[str, Fault]:
        return FAULTS

    def load(
        self,
        cluster: Cluster,
        rate: float,
        duration: float | None,
        report: Report,
        stop: Stopping,
    ) -> None:
        load.run(cluster, rate, duration, report, stop)

    def briefing(self, cluster: Cluster) -> str:
        return briefing(cluster)

    def diagnostics(self, cluster: Cluster, targets: Sequence[str]) -> list[str]:
        return diagnostics(cluster, targets)


subject = Postgres()
