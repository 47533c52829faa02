"""Looking at a TiKV cluster through PD's HTTP API and Prometheus.

From PD (the first member that answers; PD forwards to its leader): the members and their
leader, each member's health, the stores with their state and counts, and the regions PD
reports missing a peer, with a down peer or with a pending one. From Prometheus: per-store
request rate, p99 gRPC latency, disk capacity and availability, and CPU, each selected by
the store's *status* address, which is what Prometheus scrapes (not the store port).

A look that reaches no PD member fails (``SubjectUnreachable``). A look where PD answers but
part of what it is asked for fails (no PD leader, Prometheus down) succeeds, and names the
invariants it could not evaluate in ``Observation.unobserved``, so their tickets stay open.
"""

from __future__ import annotations

import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx

from operator_ai.core import Cluster, Observation
from operator_ai.errors import SubjectUnreachable
from operator_ai.lab.load import read_workload
from operator_ai.subjects.http import describe
from operator_ai.subjects.tikv.compose import TIKV_STATUS, names

PD_STATES_UP = ("Up",)
REGION_CHECKS = ("miss-peer", "down-peer", "pending-peer")
RATE_WINDOW = "1m"
UNITS = {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}
UNITS |= {"kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}
SIZE = re.compile(r"^\s*([0-9.]+(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")

FOLLOWER_HANDLES = {"PD-Allow-follower-handle": "true"}
"""PD forwards every API call to its leader (503 without one) unless asked to answer itself."""
# What needs PD's leader, and what needs Prometheus: left unevaluated when they fail; and
# what cannot be seen of a store that is not Up.
NEEDS_PD_LEADER = ("store_down", "region_unhealthy", "leader_imbalance", "low_disk_space",
                   "high_latency")  # fmt: skip
NEEDS_PROMETHEUS = ("high_latency",)
PER_STORE = ("high_latency", "low_disk_space")


def queries(status_addresses: list[str]) -> dict[str, str]:
    """The PromQL for each per-store figure, matched on the stores' status addresses.

    Rates are summed per instance; the latency quantile is taken over buckets summed by
    ``le`` and instance, as ``histogram_quantile`` needs."""
    match = f'instance=~"{_alternation(status_addresses)}"'
    grpc = f'{match}, type!="kv_gc"'  # GC traffic is not client traffic
    return {
        "qps": f"sum by (instance) (rate(tikv_grpc_msg_duration_seconds_count{{{grpc}}}"
        f"[{RATE_WINDOW}]))",
        "p99_seconds": "histogram_quantile(0.99, sum by (le, instance) "
        f"(rate(tikv_grpc_msg_duration_seconds_bucket{{{grpc}}}[{RATE_WINDOW}])))",
        "disk_capacity": f'sum by (instance) (tikv_store_size_bytes{{{match}, type="capacity"}})',
        "disk_available": f'sum by (instance) (tikv_store_size_bytes{{{match}, type="available"}})',
        "cpu_seconds": f"sum by (instance) (rate(process_cpu_seconds_total{{{match}}}"
        f"[{RATE_WINDOW}]))",
    }


def _alternation(values: list[str]) -> str:
    # An RE2 alternation inside a PromQL string literal, where a backslash is doubled.
    return "|".join(re.escape(v).replace("\\", "\\\\") for v in values)


def parse_size(value: Any) -> int | None:
    """PD writes sizes as humanised strings ("9.995GiB", "512MiB"); numbers pass through."""
    if isinstance(value, int | float):
        return int(value)
    match = SIZE.match(str(value)) if value is not None else None
    if not match or match.group(2) not in UNITS:
        return None
    return int(float(match.group(1)) * UNITS[match.group(2)])


def observe(lab: Cluster, timeout: float) -> Observation:
    at = datetime.now(UTC)
    pd_nodes = [lab.node(name) for name in names(lab.nodes, "pd")]
    expected = names(lab.nodes, "tikv")
    deadline = time.monotonic() + timeout
    with (
        httpx.Client(trust_env=False, verify=False) as client,
        ThreadPoolExecutor(max_workers=len(pd_nodes) + 1) as pool,
    ):
        probe = _Probe(client, deadline)
        # Prometheus and every PD member are asked at once, so that one slow member cannot
        # starve the others of their share of the deadline.
        addresses = [f"{name}:{TIKV_STATUS}" for name in expected]
        metrics = pool.submit(_prometheus, probe, lab.extra.get("prometheus"), addresses)
        pings = [pool.submit(_ping, probe, n.url()) for n in pd_nodes]
        nodes: dict[str, dict[str, Any]] = {
            n.name: {"role": "pd", "reachable": False, "address": n.url()} for n in pd_nodes
        }
        errors: list[str] = []
        answering = None
        for node, ping in zip(pd_nodes, pings, strict=True):
            problem = ping.result()
            if problem:
                nodes[node.name]["error"] = problem
                errors.append(f"{node.name}: {problem}")
            elif answering is None:  # the first that answers will do: the rest it forwards
                answering = node
        if answering is None:
            raise SubjectUnreachable(f"no PD member answered: {'; '.join(errors)}")
        cluster: dict[str, Any] = {"answering_pd": answering.name, "errors": {}}
        unobserved: set[str] = set()
        listed = _pd(probe, answering.url(), nodes, cluster, unobserved)
        figures, error = metrics.result()
    _stores(nodes, expected if listed else [], figures, unobserved)
    if error:
        cluster["errors"]["prometheus"] = error
        unobserved.update(NEEDS_PROMETHEUS)
    cluster["workload"] = read_workload(lab.workdir)
    return Observation("tikv", at, nodes, cluster, unobserved=tuple(sorted(unobserved)))


def _ping(probe: _Probe, url: str) -> str | None:
    """Why a PD member does not answer, or None when it does (leader or not)."""
    try:
        probe.get(url, "/pd/api/v1/ping", parse=False, local=True)
    except (httpx.HTTPError, ValueError) as exc:
        return describe(exc)
    return None


class _Probe:
    def __init__(self, client: httpx.Client, deadline: float) -> None:
        self.client = client
        self.deadline = deadline

    def get(
        self, base: str, path: str, parse: bool = True, local: bool = False, **params: str
    ) -> Any:
        """GET a JSON answer. ``local`` asks a PD member to answer itself rather than
        forward to its leader, which it cannot do while there is none."""
        left = max(0.05, self.deadline - time.monotonic())
        headers = FOLLOWER_HANDLES if local else None
        response = self.client.get(
            f"{base}{path}", params=params or None, headers=headers, timeout=left
        )
        response.raise_for_status()
        return response.json() if parse else None


def _pd(
    probe: _Probe,
    url: str,
    nodes: dict[str, dict[str, Any]],
    cluster: dict[str, Any],
    unobserved: set[str],
) -> bool:
    """Members, health, stores and region checks, from one PD member; whether it listed
    the stores."""
    try:
        health = probe.get(url, "/pd/api/v1/health", local=True)
        for member in health:
            seen = nodes.setdefault(member["name"], {"role": "pd", "address": None})
            seen.update(reachable=True, healthy=bool(member.get("health")),
                        member_id=member.get("member_id"))  # fmt: skip
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        cluster["errors"]["health"] = describe(exc)
        unobserved.add("pd_member_unhealthy")
    try:
        members = probe.get(url, "/pd/api/v1/members", local=True)
        leader = (members.get("leader") or {}).get("name")
        cluster["leader"] = leader
        for name, seen in nodes.items():
            if seen["role"] == "pd":
                seen["is_leader"] = name == leader
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # Not an answer about the leader (a timeout, say): say nothing about it either way.
        cluster["leader"] = None
        cluster["errors"]["members"] = describe(exc)
        unobserved.add("no_pd_leader")
    try:
        stores = probe.get(url, "/pd/api/v1/stores")
        listed = True
        for entry in stores.get("stores") or []:
            name, seen = _store(entry)
            nodes[name] = seen
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        cluster["errors"]["stores"] = describe(exc)
        unobserved.update(NEEDS_PD_LEADER)
        listed = False
    regions: dict[str, int] = {}
    for check in REGION_CHECKS:
        try:
            found = probe.get(url, f"/pd/api/v1/regions/check/{check}")
            regions[check.replace("-", "_")] = int(found.get("count", 0))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            cluster["errors"][f"regions/{check}"] = describe(exc)
            unobserved.add("region_unhealthy")
    cluster["regions"] = regions
    return listed


def _store(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    store, status = entry["store"], entry.get("status") or {}
    address = store.get("address", "")
    name = address.rsplit(":", 1)[0] or f"store{store['id']}"
    state = store.get("state_name", "Unknown")
    return name, {
        "role": "tikv",
        "store_id": store["id"],
        "address": address,
        "status_address": store.get("status_address"),
        "state": state,
        "reachable": state in PD_STATES_UP,
        "healthy": state in PD_STATES_UP,
        "leader_count": int(status.get("leader_count", 0)),
        "region_count": int(status.get("region_count", 0)),
        "capacity": parse_size(status.get("capacity")),
        "available": parse_size(status.get("available")),
        "last_heartbeat": status.get("last_heartbeat_ts"),
    }


def _stores(
    nodes: dict[str, dict[str, Any]],
    expected: list[str],
    figures: dict[str, dict[str, float]],
    unobserved: set[str],
) -> None:
    """Merge Prometheus's figures into PD's stores; add the ``expected`` stores PD does not
    list; keep the disk and latency tickets of a store that is not Up, which cannot be seen."""
    for name in expected:
        if name not in nodes:  # never registered, or removed as a tombstone
            nodes[name] = {"role": "tikv", "store_id": None, "address": None,
                           "status_address": None, "state": "not registered",
                           "reachable": False, "healthy": False, "leader_count": 0}  # fmt: skip
    for name, store in nodes.items():
        if store["role"] != "tikv":
            continue
        if store["state"] not in PD_STATES_UP:
            unobserved.update(f"{invariant}:{name}" for invariant in PER_STORE)
        seen = figures.get(store.get("status_address") or "", {})
        if "qps" in seen:
            store["qps"] = seen["qps"]
        if "p99_seconds" in seen:
            store["p99_ms"] = round(seen["p99_seconds"] * 1000, 1)
        if "cpu_seconds" in seen:
            store["cpu_cores"] = round(seen["cpu_seconds"], 3)
        for key in ("capacity", "available"):  # fresher than PD's last heartbeat
            if seen.get(f"disk_{key}") is not None:
                store[key] = int(seen[f"disk_{key}"])


def _prometheus(
    probe: _Probe, url: str | None, addresses: list[str]
) -> tuple[dict[str, dict[str, float]], str | None]:
    """Each figure per status address, or why Prometheus could not give them."""
    if not addresses:
        return {}, None
    if not url:
        return {}, "the lab names no Prometheus"
    figures: dict[str, dict[str, float]] = {}
    for figure, query in queries(addresses).items():
        try:
            answer = probe.get(url, "/api/v1/query", query=query)
            if answer.get("status") != "success":
                raise ValueError(answer.get("error") or "the query failed")
            for sample in answer["data"]["result"]:
                value = float(sample["value"][1])
                if math.isfinite(value):  # no traffic: a NaN quantile
                    figures.setdefault(sample["metric"].get("instance"), {})[figure] = value
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
            return {}, describe(exc)
    return figures, None
