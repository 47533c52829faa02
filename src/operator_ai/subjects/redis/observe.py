"""Looking at a Redis lab: every server's INFO and every sentinel's view, in parallel (each
call within the timeout), then one probe write at the primary the sentinels name, as a
client would find it. Which primary that is follows Sentinel's own rule: the view with the
newest config epoch wins. The probe holds the time it was written: how old a replica's copy
is against the primary's says how far behind the replica is, in seconds."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import redis

from operator_ai.core import Cluster, Node, Observation
from operator_ai.errors import SubjectUnreachable
from operator_ai.lab.load import read_workload
from operator_ai.subjects.redis.nodes import (
    MASTER,
    by_address,
    connect,
    newest,
    sentinels,
    servers,
)

PROBE_KEY = "operator:probe"
REPLICA_FIELDS = ("state", "offset", "lag")


def _error(exc: Exception) -> dict[str, Any]:
    return {"reachable": False, "error": f"{type(exc).__name__}: {exc}"}


def _server(node: Node, timeout: float) -> dict[str, Any]:
    seen: dict[str, Any] = {"kind": "server", "address": f"{node.address}:{node.ports['redis']}"}
    try:
        with connect(node, timeout) as client:
            info = client.info("everything")
            probe = client.get(PROBE_KEY)
    except redis.AuthenticationError as exc:  # it answers, but not without a password
        return {**seen, "reachable": True, "auth_required": True, "error": str(exc)}
    except (redis.RedisError, OSError) as exc:
        return {**seen, **_error(exc)}
    replicas = [
        {"address": f"{v['ip']}:{v['port']}", **{k: v.get(k) for k in REPLICA_FIELDS}}
        for k, v in sorted(info.items())
        if k.startswith("slave") and isinstance(v, dict)
    ]
    return {
        **seen,
        "reachable": True,
        "role": "primary" if info.get("role") == "master" else "replica",
        "master": (
            f"{info['master_host']}:{info['master_port']}" if "master_host" in info else None
        ),
        "master_link": info.get("master_link_status"),
        "master_last_io_seconds": info.get("master_last_io_seconds_ago"),
        "offset": info.get("master_repl_offset"),
        "replica_offset": info.get("slave_repl_offset"),
        "replicas": replicas,
        "probe_at": float(probe) if probe else None,
        "min_replicas_to_write": info.get("min_slaves_to_write", 0),
        "used_memory": info.get("used_memory"),
        "maxmemory": info.get("maxmemory"),
        "maxmemory_policy": info.get("maxmemory_policy"),
        "evicted_keys": info.get("evicted_keys"),
        "rejected_connections": info.get("rejected_connections"),
        "keys": sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db")),
    }


def _sentinel(node: Node, timeout: float) -> dict[str, Any]:
    seen: dict[str, Any] = {
        "kind": "sentinel",
        "address": f"{node.address}:{node.ports['sentinel']}",
    }
    try:
        with connect(node, timeout) as client:
            master = client.sentinel_master(MASTER)
            replicas = client.sentinel_slaves(MASTER)
            others = client.sentinel_sentinels(MASTER)
            try:  # redis-py reads CKQUORUM's "+OK ..." as False; ask for the raw reply
                quorum = str(client.execute_command("SENTINEL", "CKQUORUM", MASTER))
                quorum_ok = True
            except redis.ResponseError as exc:
                quorum, quorum_ok = str(exc), False
    except (redis.RedisError, OSError) as exc:
        return {**seen, **_error(exc)}
    return {
        **seen,
        "reachable": True,
        "role": "sentinel",
        "names": f"{master['ip']}:{master['port']}",
        "flags": sorted(k for k in ("is_sdown", "is_odown", "is_disconnected") if master.get(k)),
        "config_epoch": int(master.get("config-epoch", 0)),
        "quorum": master.get("quorum"),
        "ckquorum": quorum,
        "quorum_ok": quorum_ok,
        "replicas": sorted(f"{r['ip']}:{r['port']}" for r in replicas),
        "replicas_down": sorted(f"{r['ip']}:{r['port']}" for r in replicas if r.get("is_sdown")),
        "sentinels": len(others) + 1,
        "sentinels_down": sum(1 for s in others if s.get("is_sdown")),
    }


def _probe(node: Node, timeout: float) -> dict[str, Any]:
    """One write, as any client of the primary would make it."""
    try:
        with connect(node, timeout) as client:
            client.set(PROBE_KEY, str(time.time()), ex=60)
    except (redis.RedisError, OSError) as exc:
        return {"node": node.name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"node": node.name, "ok": True}


def observe(lab: Cluster, timeout: float) -> Observation:
    at = datetime.now(UTC)
    server_nodes, sentinel_nodes = servers(lab), sentinels(lab)
    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        futures = {n.name: pool.submit(_server, n, timeout) for n in server_nodes}
        futures |= {n.name: pool.submit(_sentinel, n, timeout) for n in sentinel_nodes}
        seen = {name: future.result() for name, future in futures.items()}
    if not any(node["reachable"] for node in seen.values()):
        errors = "; ".join(f"{name}: {node['error']}" for name, node in seen.items())
        raise SubjectUnreachable(f"no Redis server and no sentinel answered: {errors}")

    views = [seen[n.name] for n in sentinel_nodes if seen[n.name]["reachable"]]
    named = newest((v["config_epoch"], v["names"]) for v in views)
    primary = None
    if named is not None:
        host, _, port = named.rpartition(":")
        primary = by_address(server_nodes, host, int(port))
    cluster: dict[str, Any] = {
        "primary": primary.name if primary else None,
        "named": sorted({v["names"] for v in views}),
        "probe": _probe(primary, timeout) if primary else None,
        "workload": read_workload(lab.workdir),
    }
    return Observation(subject="redis", at=at, nodes=seen, cluster=cluster)
