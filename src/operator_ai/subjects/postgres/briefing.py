"""What the agent is told about a PostgreSQL-under-Patroni lab, and shown before its first
turn: the parts, the tools and what it may change. No playbook."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from operator_ai.core import NETNS, Cluster, Node
from operator_ai.subjects.briefing import log_tails, tool_version
from operator_ai.subjects.postgres.nodes import (
    API,
    APP,
    CLIENT,
    DATABASE,
    POSTGRES,
    SCOPE,
    SUPERUSER,
    config_path,
    dcs,
    members,
    password,
)


def _psql(node: Node) -> str:
    return (
        f"psql 'host={node.address} port={node.ports[POSTGRES]} user={SUPERUSER} dbname={DATABASE}'"
    )


def _patronictl(cluster: Cluster) -> str:
    return f"patronictl -c {config_path(cluster.workdir, members(cluster)[0].name)}"


def diagnostics(cluster: Cluster, targets: Sequence[str]) -> list[str]:
    lab_dir = cluster.workdir
    names = [n.name for n in cluster.nodes]
    logs = [n for n in names if n in targets] or names
    secret = shlex.quote(password(cluster) or "")
    sessions = "; ".join(
        f"echo '== {n.name}'; PGPASSWORD={secret} timeout 5 {_psql(n)} -XAt -F ' ' -c \"SELECT "
        "'in_recovery', pg_is_in_recovery(); SELECT state, count(*), "
        "max(now() - xact_start) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "GROUP BY state; SELECT 'slot', slot_name, active, restart_lsn FROM pg_replication_slots\""
        for n in members(cluster)
    )
    health = "; ".join(
        f'echo "{n.name}: $(timeout 3 curl -s {n.url(CLIENT)}/health)"' for n in dcs(cluster)
    )
    return [
        f"supervisorctl -c {lab_dir}/supervisord.conf status",
        f"timeout 10 {_patronictl(cluster)} list",
        health,
        sessions,
        log_tails([lab_dir / "logs" / f"{n}.log" for n in logs]),
    ]


def briefing(cluster: Cluster) -> str:
    lab_dir = cluster.workdir
    pg, etcd = members(cluster), dcs(cluster)

    def row(node: Node) -> str:
        if POSTGRES in node.ports:
            where = (f"PostgreSQL {node.address}:{node.ports[POSTGRES]}, Patroni API "
                     f"http://{node.address}:{node.ports[API]}")  # fmt: skip
            conf = config_path(lab_dir, node.name)
            data = f"{lab_dir}/data/{node.name}/pgdata"
        else:
            where, conf, data = (
                node.url(CLIENT),
                lab_dir / "conf" / f"{node.name}.yml",
                (f"{lab_dir}/data/{node.name}"),
            )
        return f"| {node.name} | {where} | {conf} | {data} | {lab_dir}/logs/{node.name}.log |"

    rows = "\n".join(row(n) for n in [*pg, *etcd])
    network = (
        f"Each node runs in its own network namespace on {cluster.subnet}. Your shell runs in "
        "the lab's ops namespace on the same bridge. You cannot change the network itself: "
        "undoing an injected network fault is not your job, keeping the service healthy "
        "despite it is."
        if cluster.mode == NETNS
        else "Every node listens on 127.0.0.1 with its own ports (loopback mode)."
    )
    endpoints = ", ".join(f"{n.address}:{n.ports[CLIENT]}" for n in etcd)
    return f"""\
## The system: PostgreSQL under Patroni, {len(pg)} members, etcd as the DCS ({len(etcd)} members)

Each member `pgN` is a Patroni process that runs its own PostgreSQL. The Patroni cluster is
called `{SCOPE}`; its state (the leader lock, the members, the dynamic configuration) lives
in the etcd cluster (`dcsN`, client endpoints {endpoints}, v3 API). The member holding the
leader lock runs the primary; the others stream WAL from it, asynchronously, through
replication slots Patroni manages. Patroni fails over when the leader lock lapses and can
rewind a former primary (`use_pg_rewind` is on).

The application connects as the role `{APP}` with a connection string naming every member
and `target_session_attrs=read-write`, and inserts rows into the table `load_writes` of the
database `{DATABASE}`. The superuser is `{SUPERUSER}`; every role's password is in the
members' Patroni configs (`postgresql.authentication`), and connections over TCP need it.

| node | address | config | data dir | log |
|---|---|---|---|---|
{rows}

{network}

Each node is a supervisord program of the same name with `autorestart=false`: one that dies
stays down until someone starts it. Patroni starts and stops its own PostgreSQL. Everything
runs as the unprivileged user `{cluster.user}`, as you do. The configs are yours to edit; a
member reads its own at start (or on `patronictl reload`). Settings for the whole cluster
live in the DCS: `patronictl edit-config`.

## Tools

- `{_patronictl(cluster)} list|history|show-config|edit-config|failover|switchover|reinit|`
  `pause|resume|restart|reload` ({tool_version("patronictl", "version")}; `--force` skips
  its prompts).
- `{_psql(pg[0])}` and the same for each member ({tool_version("psql", "--version")}); set
  `PGPASSWORD` first.
- Patroni's REST API on each member: `/patroni`, `/cluster`, `/history`, `/config`,
  `/primary`, `/replica`, `/health` (`curl`).
- `etcdctl --endpoints {endpoints} endpoint health|status` ({tool_version("etcdctl", "version")}).
- `supervisorctl -c {lab_dir}/supervisord.conf status|start|stop|restart|tail NAME`
- The logs above (`tail`, `grep`), and the usual shell tools.
"""
