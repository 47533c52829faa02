"""Looking at an etcd cluster through its HTTP/JSON gateway and its /metrics endpoint.

Per member, in parallel and within one deadline: `/v3/maintenance/status` (leader, term,
raft index, DB size) and four gauges from `/metrics`. Once per cluster:
the member list and the alarms, asked of the first member that answered.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx

from operator_ai.core import Cluster, Node, Observation
from operator_ai.errors import SubjectUnreachable
from operator_ai.lab.load import read_workload
from operator_ai.subjects.http import describe

METRICS = {
    "etcd_server_has_leader": "has_leader",
    "etcd_server_leader_changes_seen_total": "leader_changes",
    "etcd_server_quota_backend_bytes": "quota",
    "etcd_mvcc_db_total_size_in_bytes": "db_size",
}


def observe(cluster: Cluster, timeout: float) -> Observation:
    """One look at every member, all within ``timeout`` seconds."""
    at = datetime.now(UTC)
    # A client per look: nothing to leak between cycles. The lab speaks plain HTTP, so the
    # client skips building a TLS context, which would cost more CPU than the whole look.
    with (
        httpx.Client(trust_env=False, verify=False) as client,
        ThreadPoolExecutor(max_workers=len(cluster.nodes)) as pool,
    ):
        probe = _Probe(client, time.monotonic() + timeout)
        seen = dict(
            zip([n.name for n in cluster.nodes], pool.map(probe.member, cluster.nodes), strict=True)
        )
        answering = [cluster.node(name) for name, m in seen.items() if m["reachable"]]
        if not answering:
            errors = "; ".join(f"{name}: {m['error']}" for name, m in seen.items())
            raise SubjectUnreachable(f"no etcd member answered: {errors}")
        found = probe.cluster(answering[0], seen)
    found["workload"] = read_workload(cluster.workdir)
    return Observation(subject="etcd", at=at, nodes=seen, cluster=found)


class _Probe:
    def __init__(self, client: httpx.Client, deadline: float) -> None:
        self.client = client
        self.deadline = deadline

    def _post(self, node: Node, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(f"{node.url()}{path}", json=body, timeout=self._left())
        response.raise_for_status()
        return response.json()

    def _left(self) -> float:
        return max(0.05, self.deadline - time.monotonic())

    def member(self, node: Node) -> dict[str, Any]:
        seen: dict[str, Any] = {"reachable": False, "address": node.url()}
        try:
            started = time.monotonic()
            status = self._post(node, "/v3/maintenance/status", {})
            seen["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            seen["reachable"] = True
            seen.update(
                member_id=status["header"]["member_id"],
                leader_id=status.get("leader", "0"),
                term=int(status.get("raftTerm", 0)),
                raft_index=int(status.get("raftIndex", 0)),
                raft_applied=int(status.get("raftAppliedIndex", 0)),
                db_size=int(status.get("dbSize", 0)),
                db_in_use=int(status.get("dbSizeInUse", 0)),
                version=status.get("version"),
            )
            metrics = self.client.get(f"{node.url()}/metrics", timeout=self._left())
            seen.update(parse_metrics(metrics.text))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            seen["error"] = describe(exc)
        return seen

    def cluster(self, node: Node, seen: dict[str, dict[str, Any]]) -> dict[str, Any]:
        cluster: dict[str, Any] = {"members": [], "alarms": [], "leader": None}
        names = {m.get("member_id"): name for name, m in seen.items() if m["reachable"]}
        try:
            listed = self._post(node, "/v3/cluster/member/list", {})
            for member in listed.get("members", []):
                names.setdefault(member["ID"], member.get("name") or member["ID"])
                cluster["members"].append(
                    {"id": member["ID"], "name": member.get("name", ""),
                     "peer_urls": member.get("peerURLs", [])}
                )  # fmt: skip
            alarms = self._post(node, "/v3/maintenance/alarm", {"action": "GET"})
            for alarm in alarms.get("alarms", []):
                member = names.get(alarm.get("memberID"), alarm.get("memberID"))
                cluster["alarms"].append({"member": member, "alarm": alarm.get("alarm")})
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            cluster["error"] = describe(exc)
        for name, member in seen.items():
            leader_id = member.get("leader_id")
            member["leader"] = names.get(leader_id) if leader_id not in (None, "0") else None
            member["is_leader"] = member["reachable"] and member["leader"] == name
        leaders = {m["leader"] for m in seen.values() if m["reachable"] and m["leader"]}
        cluster["leader"] = leaders.pop() if len(leaders) == 1 else None
        # What etcd's /health reports (a leader and no alarm), without its linearizable read,
        # which blocks for seconds exactly when the cluster is in trouble.
        alarmed = {a["member"] for a in cluster["alarms"]}
        for name, member in seen.items():
            member["healthy"] = bool(member["leader"]) and name not in alarmed
        return cluster


def parse_metrics(text: str) -> dict[str, float]:
    """The few unlabelled samples we need, without parsing the other ~1,500 lines."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        key = METRICS.get(name)
        if key is not None:
            found[key] = float(value)
    return found
