"""A loopback fake PD and a fake Prometheus, serving a cluster state a test sets, in the
shapes the real APIs use. No TiKV or Docker runs here, so these stand in for them.

Where each shape comes from:
- `/pd/api/v1/stores`: tikv/pd `pkg/response/store.go` (StoresInfo, StoreInfo, StoreStatus)
  with kvproto `metapb.Store`: zero values are omitted (no `state` for an Up store), sizes are
  docker/go-units strings ("100GiB", "9.995GiB"), tombstones are left out by default.
- `/pd/api/v1/members`: tikv/pd `server/api/member.go`, kvproto `pdpb.GetMembersResponse`.
- `/pd/api/v1/health`: tikv/pd `server/api/health.go` (a list; a dead member has health false).
- `/pd/api/v1/regions/check/<kind>`: tikv/pd `server/api/region.go` ({"count", "regions"}).
- `/pd/api/v1/ping`: tikv/pd `server/api/router.go` (200, empty body).
- Without a leader, PD's redirector (tikv/pd `pkg/utils/apiutil/serverapi/middleware.go`)
  answers 503 to every call, unless the header `PD-Allow-follower-handle: true` asks the
  member to answer itself.
- PD errors: a bare JSON string with HTTP 500 (tikv/pd `server/api`, `rd.JSON(w, 500, ...)`).
- Prometheus `/api/v1/query`: prometheus.io/docs/prometheus/latest/querying/api (an
  instant vector: {"metric": {...}, "value": [unix seconds, "string value"]}).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from fake_providers import LoopbackServer

GiB = 2**30
LOCAL_PATHS = ("/pd/api/v1/ping", "/pd/api/v1/health", "/pd/api/v1/members")
"""What a member answers itself when asked to (PD-Allow-follower-handle), leader or not."""


@dataclass
class Store:
    id: int
    name: str
    state: str = "Up"
    leader_count: int = 10
    region_count: int = 30
    capacity: int = 100 * GiB
    available: int = 80 * GiB
    p99_seconds: float = 0.004
    qps: float = 120.0
    cpu: float = 0.35

    @property
    def status_address(self) -> str:
        return f"{self.name}:20180"


@dataclass
class Cluster:
    pds: dict[str, bool] = field(default_factory=lambda: {f"pd{i}": True for i in (1, 2, 3)})
    leader: str | None = "pd1"
    stores: list[Store] = field(default_factory=lambda: [Store(i, f"tikv{i}") for i in (1, 2, 3)])
    regions: dict[str, int] = field(
        default_factory=lambda: {"miss-peer": 0, "down-peer": 0, "pending-peer": 0}
    )
    prometheus_up: bool = True
    health_up: bool = True


def size(n: int) -> str:
    """docker/go-units BytesSize: four significant digits, binary units, no space."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.4g}{units[unit]}"


class _Server(LoopbackServer):
    def __init__(self, answer: Any) -> None:
        self.received: list[str] = []
        self._answer = answer
        super().__init__(self._handler())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.received.append(self.path)
                local = self.headers.get("PD-Allow-follower-handle", "").lower() == "true"
                status, body = server._answer(urlparse(self.path), local)
                data = body if isinstance(body, bytes) else json.dumps(body, indent=2).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class FakePD(_Server):
    """One PD member's HTTP API over the shared ``cluster`` state."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        super().__init__(self.answer)

    def member(self, name: str) -> dict[str, Any]:
        number = int(name[2:])
        return {
            "name": name,
            "member_id": 1319539429105837100 + number,
            "peer_urls": [f"http://{name}:2380"],
            "client_urls": [f"http://{name}:2379"],
        }

    def answer(self, url: Any, local: bool) -> tuple[int, Any]:
        c = self.cluster
        path = url.path
        if c.leader is None and not (local and path in LOCAL_PATHS):
            return 503, "no leader"  # the redirector finds no leader to forward to
        if path == "/pd/api/v1/ping":
            return 200, b""
        if path == "/pd/api/v1/health":
            if not c.health_up:
                return 500, "[PD:etcd:ErrEtcdMemberList]etcd member list failed"
            return 200, [{**self.member(n), "health": up} for n, up in c.pds.items()]
        if path == "/pd/api/v1/members":
            members = [{**self.member(n), "binary_version": "v7.5.1"} for n in c.pds]
            found: dict[str, Any] = {"header": {"cluster_id": 7300000000000000001},
                                     "members": members}  # fmt: skip
            if c.leader is not None:
                found.update(leader=self.member(c.leader), etcd_leader=self.member(c.leader))
            return 200, found
        if path == "/pd/api/v1/stores":
            listed = [s for s in c.stores if s.state != "Tombstone"]
            return 200, {"count": len(listed), "stores": [self.store(s) for s in listed]}
        if path.startswith("/pd/api/v1/regions/check/"):
            kind = path.rsplit("/", 1)[1]
            count = c.regions.get(kind, 0)
            regions = [
                {
                    "id": 100 + i,
                    "start_key": "",
                    "end_key": "",
                    "epoch": {"conf_ver": 5, "version": 3},
                    "peers": [],
                }
                for i in range(count)
            ]
            return 200, {"count": count, "regions": regions}
        return 404, "404 page not found"

    def store(self, s: Store) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": s.id,
            "address": f"{s.name}:20160",
            "version": "7.5.1",
            "status_address": s.status_address,
            "git_hash": "abc",
            "start_timestamp": 1700000000,
            "last_heartbeat": 1700000100123456789,
            "state_name": s.state,
        }
        if s.state == "Offline":
            meta["state"] = 1
        status = {
            "capacity": size(s.capacity),
            "available": size(s.available),
            "used_size": size(s.capacity - s.available),
            "leader_count": s.leader_count,
            "leader_weight": 1,
            "leader_score": s.leader_count,
            "leader_size": s.leader_count,
            "region_count": s.region_count,
            "region_weight": 1,
            "region_score": s.region_count,
            "region_size": s.region_count,
            "last_heartbeat_ts": "2023-11-14T22:15:00.123456789Z",
            "uptime": "1m40.123456789s",
        }
        return {"store": meta, "status": status}


class FakePrometheus(_Server):
    """Answers instant queries for the figures the monitor asks for, honouring the query's
    `instance=~` matcher, so a query on the wrong port gets an empty vector, as it would."""

    FIGURES = (
        ("histogram_quantile", "p99_seconds"),
        ("tikv_grpc_msg_duration_seconds_count", "qps"),
        ('type="capacity"', "capacity"),
        ('type="available"', "available"),
        ("process_cpu_seconds_total", "cpu"),
    )

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        super().__init__(self.answer)

    def answer(self, url: Any, local: bool) -> tuple[int, Any]:
        if not self.cluster.prometheus_up:
            return 503, {"status": "error", "errorType": "unavailable", "error": "not ready"}
        if url.path != "/api/v1/query":
            return 404, {"status": "error", "errorType": "not_found", "error": "no such route"}
        query = parse_qs(url.query)["query"][0]
        figure = next((f for marker, f in self.FIGURES if marker in query), None)
        matcher = re.search(r'instance=~"((?:[^"\\]|\\.)*)"', query)
        if figure is None or matcher is None:
            return 400, {"status": "error", "errorType": "bad_data", "error": "unexpected query"}
        pattern = re.compile(matcher.group(1).replace("\\\\", "\\"))
        now = round(time.time(), 3)
        result = [
            {
                "metric": {"instance": s.status_address, "job": "tikv"},
                "value": [now, repr(float(getattr(s, figure)))],
            }
            for s in self.cluster.stores
            if pattern.fullmatch(s.status_address)
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@dataclass
class FakeTiKV:
    cluster: Cluster
    pds: dict[str, FakePD]
    prometheus: FakePrometheus


@contextmanager
def fake_tikv() -> Iterator[FakeTiKV]:
    cluster = Cluster()
    pds = {name: FakePD(cluster, name) for name in cluster.pds}
    prometheus = FakePrometheus(cluster)
    try:
        yield FakeTiKV(cluster, pds, prometheus)
    finally:
        for server in [*pds.values(), prometheus]:
            server.close()
