"""PostgreSQL under Patroni's own faults. The lab's generic `kill` on a member SIGKILLs its
Patroni alone: its PostgreSQL runs on without anyone in charge of it, as after a crashed
agent. `crash` takes both down, as a lost host does."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from operator_ai.core import CLUSTER, MODES, NETNS, NODE, Fault, Injection, LabHandle, Node
from operator_ai.errors import LabError, UsageError
from operator_ai.lab import procs
from operator_ai.lab.faults import (
    helper_log,
    helpers,
    kill_node,
    leader_node,
    node_among,
    number,
    start_nodes,
    stop_nodes,
    undone,
)
from operator_ai.lab.state import CLEAN_ENV, private_dir
from operator_ai.subjects.postgres.nodes import (
    APP,
    POSTGRES,
    SUPERUSER,
    api,
    api_url,
    config_path,
    connect,
    conninfo,
    dcs,
    members,
)

TIMEOUT = 10.0
ORPHAN_SLOT = "barman"
"""The slot left behind: a backup server's, declared permanent, long since decommissioned."""


def _member(lab: LabHandle, target: str) -> Node:
    return node_among(lab, target, members(lab.cluster), "a PostgreSQL member")


def _primary(lab: LabHandle) -> Node:
    return leader_node(lab, "no member holds the leader lock")


def _patch_config(lab: LabHandle, change: dict[str, Any]) -> None:
    """Change Patroni's dynamic configuration (kept in the DCS) through any member's API,
    as `patronictl edit-config` does."""
    errors = []
    for node in members(lab.cluster):
        try:
            httpx.patch(api_url(node, "/config"), json=change, timeout=TIMEOUT).raise_for_status()
            return
        except httpx.HTTPError as exc:
            errors.append(f"{node.name}: {type(exc).__name__}: {exc}")
    raise LabError(f"no member took the config change {change}: {'; '.join(errors)}")


def _wait(what: str, done: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for {what}")
        time.sleep(0.2)


def postmaster(lab: LabHandle, member: str) -> procs.Proc | None:
    """A member's PostgreSQL: Patroni starts it in a session of its own, outside its own
    process tree, so it is found as the lab user's process started with ``-D`` on the
    member's data directory."""
    pgdata = str(lab.path / "data" / member / "pgdata")
    user = pwd.getpwnam(lab.cluster.user).pw_uid if lab.cluster.user else os.geteuid()
    for pid in procs.referencing(pgdata):
        argv = procs.cmdline(pid)
        started_on = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-D"]
        if started_on == [pgdata] and _owner(pid) == user:
            return procs.Proc.of(pid)
    return None


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def crash(lab: LabHandle, target: str) -> list[int]:
    """SIGKILL a member's Patroni and its PostgreSQL (the postmaster and every backend),
    nothing shut down cleanly."""
    server = postmaster(lab, target)
    under = [p for p in map(procs.Proc.of, procs.tree(server.pid)) if p] if server else []
    killed = [kill_node(lab, target)]
    for proc in under:
        if proc.signal(signal.SIGKILL):
            killed.append(proc.pid)
    return killed


class Crash:
    name = "crash"
    description = "SIGKILL a member's Patroni and its PostgreSQL together, as a lost host"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        return {"killed": crash(lab, _member(lab, target).name)}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        lab.cluster.control.start(injection.target)


class DcsQuorumLoss:
    name = "dcs_quorum_loss"
    description = "stop a majority of the DCS's etcd members: Patroni demotes the primary"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        every = [n.name for n in dcs(lab.cluster)]
        return {"stopped": stop_nodes(lab, every[: len(every) // 2 + 1])}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        start_nodes(lab, injection.state["stopped"])


class MaintenanceLeftOn:
    name = "maintenance_left_on"
    description = (
        "put the cluster in maintenance mode (`patronictl pause`), then crash the primary: "
        "nothing fails over"
    )
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        primary = _primary(lab)
        _patch_config(lab, {"pause": True})
        try:
            _wait("every member to see the pause", lambda: all(
                _paused(n) for n in members(lab.cluster)))  # fmt: skip
            return {"primary": primary.name, "killed": crash(lab, primary.name)}
        except LabError:
            _patch_config(lab, {"pause": False})
            raise

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        _patch_config(lab, {"pause": False})
        lab.cluster.control.start(injection.state["primary"])


def _paused(node: Node) -> bool:
    try:
        return bool(api(node, "/patroni", TIMEOUT).json().get("pause"))
    except (httpx.HTTPError, ValueError):
        return False


class OrphanSlot:
    name = "orphan_slot"
    description = (
        "declare a permanent physical replication slot nobody consumes (a backup server's, "
        "long gone), then write: the primary keeps every WAL segment since, on its data disk"
    )
    params: Mapping[str, tuple[str, str]] = {"wal_mb": ("96", "MiB of WAL written after")}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        size = int(number(params, "wal_mb", 1, 400))
        primary = _primary(lab)
        _patch_config(lab, {"slots": {ORPHAN_SLOT: {"type": "physical"}}})
        try:
            _wait(f"Patroni to create the slot {ORPHAN_SLOT!r} on {primary.name}",
                  lambda: _has_slot(lab, primary))  # fmt: skip
            with connect(lab.cluster, primary, 120) as conn:
                for _ in range(0, size, 16):  # rows of about 1 KiB, 16 MiB of WAL at a time
                    conn.execute("CREATE TABLE IF NOT EXISTS operator_fill (id int, pad text)")
                    conn.execute("INSERT INTO operator_fill SELECT g, repeat(md5(g::text), 28) "
                                 "FROM generate_series(1, 18000) g")  # fmt: skip
                    conn.execute("TRUNCATE operator_fill")
                conn.execute("DROP TABLE operator_fill")
        except (psycopg.Error, LabError) as exc:
            self.revert(lab, Injection(0, self.name, target, {}, ""))
            raise undone("could not fill the slot (undone)", exc) from exc
        return {"primary": primary.name}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        _patch_config(lab, {"slots": None})


def _has_slot(lab: LabHandle, node: Node) -> bool:
    try:
        with connect(lab.cluster, node, TIMEOUT) as conn:
            found = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                 (ORPHAN_SLOT,)).fetchone()  # fmt: skip
    except psycopg.Error:
        return False
    return found is not None


def _hold(lab: LabHandle, what: str, user: str, application: str) -> dict[str, Any]:
    """Start the holder against the primary and wait until it holds what it came for."""
    primary = _primary(lab)
    log = helper_log(lab, f"{what}-{os.getpid()}")
    info = conninfo(lab.cluster, [primary], user, application_name=application)
    proc = procs.spawn(
        [sys.executable, "-I", "-m", "operator_ai.subjects.postgres.holder", what,
         "--lab", str(lab.path)],
        log, env={**CLEAN_ENV, "HOLD_CONNINFO": info}, cwd=private_dir(lab.path),
    )  # fmt: skip
    try:
        _wait(f"the {what} client to hold", lambda: _ready(log) or not proc.alive(),
              timeout=60)  # fmt: skip
        if not _ready(log):
            raise LabError(f"the {what} client failed: {log.read_text().strip()[-300:]}")
    except LabError:
        procs.terminate([proc])
        raise
    return {"primary": primary.name, "helpers": [proc], "held": log.read_text().strip()}


def _ready(log: Path) -> bool:
    return any(line.startswith("ready ") for line in log.read_text().splitlines())


class BrokenReplicaConninfo:
    name = "broken_replica_conninfo"
    description = (
        "point a replica's replication at a host where no PostgreSQL runs: it is set to "
        "stream from the other replica (`replicatefrom`), whose advertised address "
        "(`connect_address`) is wrong; both configs edited and reloaded"
    )
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        replica, primary = _member(lab, target), _primary(lab)
        if replica.name == primary.name:
            raise UsageError(f"{target} is the primary", hint="Target a replica: -t follower.")
        upstream = next((n for n in members(lab.cluster) if n not in (replica, primary)), None)
        if upstream is None or lab.cluster.subnet is None:
            raise LabError("broken_replica_conninfo needs a second replica and netns mode")
        nowhere = f"{ipaddress.ip_network(lab.cluster.subnet)[-2]}:{upstream.ports[POSTGRES]}"

        def advertise(config: dict[str, Any]) -> None:
            config["postgresql"]["connect_address"] = nowhere

        def follow(config: dict[str, Any]) -> None:
            config.setdefault("tags", {})["replicatefrom"] = upstream.name

        # The configs are the lab user's, so they are read and written as the lab user.
        before = {n.name: lab.as_user("cat", str(config_path(lab.path, n.name)))
                  for n in (upstream, replica)}  # fmt: skip
        state = {"configs": before, "upstream": upstream.name, "address": nowhere}
        try:
            _rewrite(lab, upstream.name, _changed(before[upstream.name], advertise))
            _rewrite(lab, replica.name, _changed(before[replica.name], follow))
        except Exception:
            self.revert(lab, Injection(0, self.name, target, {}, "", state=state))
            raise
        return state

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        """Every config back first, then each member reloaded; a member that is not running
        reads its config when it starts."""
        configs: dict[str, str] = injection.state["configs"]
        for member, text in configs.items():
            _rewrite(lab, member, text, reload=False)
        for member in configs:
            with contextlib.suppress(LabError):
                lab.cluster.control.signal(member, signal.SIGHUP)


def _changed(text: str, change: Callable[[dict[str, Any]], None]) -> str:
    """A Patroni config with ``change`` made, keeping its opening comment lines."""
    config = yaml.safe_load(text)
    change(config)
    comments = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return comments + json.dumps(config, indent=2) + "\n"


def _rewrite(lab: LabHandle, member: str, text: str, reload: bool = True) -> None:
    """Replace a member's Patroni config and have it read again (SIGHUP, as `patronictl
    reload` does)."""
    path = str(config_path(lab.path, member))
    lab.as_user("sh", "-c", 'cat > "$1"', "sh", path, input=text)
    if reload:
        lab.cluster.control.signal(member, signal.SIGHUP)


class Holding:
    """A client, the lab's own, that takes something and holds it until reverted."""

    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def __init__(self, name: str, description: str, what: str, user: str, app: str) -> None:
        self.name, self.description = name, description
        self.what, self.user, self.app = what, user, app

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        return _hold(lab, self.what, self.user, self.app)

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        procs.terminate(helpers(injection), grace=2.0)


CONNECTION_LEAK = Holding(
    "connection_leak",
    "a client opens connections as the application's role until refused, and leaves them idle",
    "leak", APP, "billing-worker",
)  # fmt: skip
LONG_TRANSACTION = Holding(
    "long_transaction",
    "a session opens a transaction, locks the table the load writes to against writes, and "
    "never commits",
    "lock", SUPERUSER, "nightly-report",
)  # fmt: skip


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Crash(),
        BrokenReplicaConninfo(),
        DcsQuorumLoss(),
        MaintenanceLeftOn(),
        OrphanSlot(),
        CONNECTION_LEAK,
        LONG_TRANSACTION,
    )
}
