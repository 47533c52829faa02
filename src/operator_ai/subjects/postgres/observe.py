"""Looking at a Patroni cluster: each member's Patroni (its REST API) and its PostgreSQL
(asked directly, as a client would), each DCS member's health, all in parallel; then one probe
write at the member holding the leader lock. The probe holds the time it was written: how old a
replica's copy is against the primary's says how far behind it replays, in seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import psycopg

from operator_ai.core import Cluster, Node, Observation
from operator_ai.errors import SubjectUnreachable
from operator_ai.lab.load import read_workload
from operator_ai.subjects.postgres.nodes import (
    API,
    CLIENT,
    POSTGRES,
    api,
    connect,
    dcs,
    error_text,
    members,
)

SESSION = """
SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on',
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       (SELECT extract(epoch FROM max(now() - xact_start))::float FROM pg_stat_activity
        WHERE backend_type = 'client backend'),
       (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()),
       (SELECT sum(pg_database_size(oid)) FROM pg_database),
       (SELECT timeline_id FROM pg_control_checkpoint())
"""
BLOCKING = """
SELECT h.pid, h.usename, h.application_name, h.state,
       extract(epoch FROM now() - h.xact_start)::float, left(h.query, 200),
       (SELECT count(*) FROM pg_stat_activity w WHERE h.pid = ANY(pg_blocking_pids(w.pid)))
FROM pg_stat_activity h
WHERE h.xact_start IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_stat_activity w WHERE h.pid = ANY(pg_blocking_pids(w.pid)))
ORDER BY h.xact_start LIMIT 1
"""
SLOTS = """
SELECT slot_name, slot_type, active,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
FROM pg_replication_slots ORDER BY slot_name
"""
SENDERS = """
SELECT application_name, state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint
FROM pg_stat_replication ORDER BY application_name
"""
RECEIVER = "SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver"
VIEW = "/cluster"
PROBE_TABLE = "operator_probe"
"""Where the monitor's probe writes: one row, made on the first probe."""


def _patroni_failed(error: str) -> dict[str, Any]:
    return {"patroni_ok": False, "patroni_error": error}


def _postgres_failed(error: str, refused: bool) -> dict[str, Any]:
    """``refused``: for want of a connection slot."""
    return {"postgres_ok": False, "postgres_error": error, "refused_connections": refused}


def _probe_at(conn: psycopg.Connection[Any]) -> float | None:
    """When the last probe this server holds was written (none before the first probe)."""
    try:
        row = conn.execute(f"SELECT at FROM {PROBE_TABLE} WHERE id = 1").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return float(row[0]) if row else None


def _patroni(node: Node, timeout: float) -> dict[str, Any]:
    try:
        response = api(node, "/patroni", timeout)
        seen = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return _patroni_failed(error_text(exc))
    return {
        "patroni_ok": True,
        "state": seen.get("state"),
        "patroni_role": seen.get("role"),
        "timeline": seen.get("timeline"),
        "pending_restart": bool(seen.get("pending_restart")),
        "paused": bool(seen.get("pause")),
        "cluster_unlocked": bool(seen.get("cluster_unlocked")),
        "dcs_last_seen": seen.get("dcs_last_seen"),
    }


def _postgres(cluster: Cluster, node: Node, timeout: float) -> dict[str, Any]:
    try:
        with connect(cluster, node, timeout) as conn:
            row = conn.execute(SESSION).fetchone()
            assert row is not None
            recovery, read_only, limit, reserved, clients, oldest, wal, data, timeline = row
            blocking = conn.execute(BLOCKING).fetchone()
            seen: dict[str, Any] = {
                "postgres_ok": True,
                "in_recovery": recovery,
                "writable": not recovery and not read_only,
                "max_connections": limit,
                "reserved_connections": reserved,
                "connections": clients,
                "oldest_transaction_seconds": round(oldest or 0.0, 1),
                "probe_at": _probe_at(conn),
                "wal_bytes": int(wal),
                "data_bytes": int(data or 0) + int(wal),
                "control_timeline": timeline,
                "blocking": None,
            }
            if blocking:
                pid, user, app, state, age, query, waiting = blocking
                seen["blocking"] = {"pid": pid, "user": user, "application": app,
                                    "state": state, "age": round(age, 1), "query": query,
                                    "waiting": waiting}  # fmt: skip
            if recovery:
                receiver = conn.execute(RECEIVER).fetchone()
                seen["receiver"] = (
                    {"status": receiver[0], "sender": f"{receiver[1]}:{receiver[2]}"}
                    if receiver else None
                )  # fmt: skip
            else:
                seen["slots"] = [{"name": n, "type": t, "active": a, "retained_bytes": r}
                                 for n, t, a, r in conn.execute(SLOTS).fetchall()]  # fmt: skip
                seen["senders"] = [{"name": n, "state": s, "behind_bytes": b}
                                   for n, s, b in conn.execute(SENDERS).fetchall()]  # fmt: skip
            return seen
    except psycopg.Error as exc:
        refused = isinstance(exc, psycopg.OperationalError) and "too many" in str(exc)
        return _postgres_failed(error_text(exc), refused)


def _member(cluster: Cluster, node: Node, timeout: float) -> dict[str, Any]:
    return _as_seen(node, _patroni(node, timeout), _postgres(cluster, node, timeout))


def _as_seen(node: Node, patroni: dict[str, Any], postgres: dict[str, Any]) -> dict[str, Any]:
    """A member as seen through its Patroni and its PostgreSQL."""
    seen = {
        "kind": "member",
        "address": f"{node.address}:{node.ports[POSTGRES]}",
        "api": f"{node.address}:{node.ports[API]}",
        **patroni,
        **postgres,
    }
    seen["reachable"] = seen["patroni_ok"] or seen["postgres_ok"]
    seen["healthy"] = seen["postgres_ok"] and seen.get("state") == "running"
    if seen["postgres_ok"]:
        seen["role"] = "replica" if seen["in_recovery"] else "primary"
    return seen


def _dcs(node: Node, timeout: float) -> dict[str, Any]:
    try:
        health = httpx.get(f"{node.url(CLIENT)}/health", timeout=timeout).json()
    except (httpx.HTTPError, ValueError) as exc:
        return _dcs_seen(node, None, error_text(exc))
    return _dcs_seen(node, health.get("health") == "true", health.get("reason"))


def _dcs_seen(node: Node, healthy: bool | None, error: str | None) -> dict[str, Any]:
    """An etcd member: ``healthy`` None when it did not answer at all."""
    return {"kind": "dcs", "role": "dcs", "address": f"{node.address}:{node.ports[CLIENT]}",
            "reachable": healthy is not None, "healthy": bool(healthy), "error": error}  # fmt: skip


def _view(nodes: list[Node], timeout: float) -> dict[str, Any] | None:
    """The cluster as Patroni keeps it in the DCS (`/cluster`), from the first member that
    can read it."""
    for node in nodes:
        try:
            response = api(node, "/cluster", timeout)
            if response.status_code == 200:
                return dict(response.json())
        except (httpx.HTTPError, ValueError):
            continue
    return None


def _probe(cluster: Cluster, node: Node, timeout: float) -> dict[str, Any]:
    """One write, as any client of the primary would make it (its table made on the first)."""
    try:
        with connect(cluster, node, timeout) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} "
                         "(id int PRIMARY KEY, at double precision)")  # fmt: skip
            conn.execute(f"INSERT INTO {PROBE_TABLE} VALUES (1, %s) ON CONFLICT (id) "
                         "DO UPDATE SET at = excluded.at", (time.time(),))  # fmt: skip
    except psycopg.Error as exc:
        return {"node": node.name, "ok": False, "error": error_text(exc)}
    return {"node": node.name, "ok": True}


def _hung(cluster: Cluster, name: str, seconds: float) -> dict[str, Any]:
    """What is seen of a node whose look did not come back: nothing answered."""
    node, error = cluster.node(name), f"no answer within {seconds:g} s"
    if POSTGRES not in node.ports:
        return _dcs_seen(node, None, error)
    return _as_seen(node, _patroni_failed(error), _postgres_failed(error, refused=False))


def _in_parallel(calls: dict[str, Callable[[], Any]], within: float) -> dict[str, Any]:
    """Each call's answer, each call on a daemon thread of its own. One that has not
    answered within ``within`` seconds is left out, and its thread left behind: it ends when
    its server answers or its connection dies, and never keeps the process from exiting."""
    answers: dict[str, Any] = {}

    def run(name: str, call: Callable[[], Any]) -> None:
        answers[name] = call()

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in calls.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + within
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return dict(answers)


def observe(cluster: Cluster, timeout: float) -> Observation:
    at = datetime.now(UTC)
    pg, etcd = members(cluster), dcs(cluster)
    # A server stopped mid-query holds its look for ever: the look goes on without it.
    patience = timeout * 3 + 1
    calls: dict[str, Callable[[], Any]] = {
        n.name: partial(_member, cluster, n, timeout) for n in pg
    }
    calls |= {n.name: partial(_dcs, n, timeout) for n in etcd}
    calls[VIEW] = partial(_view, pg, timeout)
    answers = _in_parallel(calls, patience)
    patroni_view = answers.pop(VIEW, None)
    seen = {name: answers.get(name) or _hung(cluster, name, patience) for name in calls
            if name != VIEW}  # fmt: skip
    if not any(s["reachable"] for s in seen.values()):
        errors = "; ".join(
            f"{name}: {s.get('patroni_error') or s.get('error')}" for name, s in seen.items()
        )
        raise SubjectUnreachable(f"no Patroni, PostgreSQL or etcd member answered: {errors}")

    view_members = {m["name"]: m for m in (patroni_view or {}).get("members", [])}
    for name, member in view_members.items():
        if name in seen:
            seen[name]["view"] = {k: member.get(k) for k in ("role", "state", "timeline", "lag")}
    leader = next((n for n, m in view_members.items() if m.get("role") == "leader"), None)
    node = next((n for n in pg if n.name == leader), None)
    cluster_seen: dict[str, Any] = {
        "leader": leader,
        "dcs_view": patroni_view is not None,
        "paused": bool((patroni_view or {}).get("pause")),
        "probe": _probe(cluster, node, timeout) if node else None,
        "disk_bytes": cluster.extra.get("disk_bytes"),
        "workload": read_workload(cluster.workdir),
    }
    return Observation(subject="postgres", at=at, nodes=seen, cluster=cluster_seen)
