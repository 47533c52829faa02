"""Looking at a rate limiter lab: each node over HTTP, and Redis directly.

Per node, in parallel within one deadline: `/health`, `/metrics` (checks by result and the
latency histogram's buckets) and `/admin/counters` (each declared key's count, by that
node's clock). Once: the registry and the effective limits, from the first node that
answered, and the truth from Redis itself (each key's requests in the last window by
Redis's clock), read with one script per key.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from operator_ai.core import Cluster, Node, Observation
from operator_ai.errors import SubjectUnreachable
from operator_ai.lab.load import read_workload
from operator_ai.subjects.http import describe
from operator_ai.subjects.ratelimiter.declared import REDIS, declared

# The requests admitted in the last window, by Redis's clock; entries a few ms ahead (a node
# whose clock leads by the network's latency) still count, entries from far ahead do not.
TRUTH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[1])), now + 50)}
"""


def observe(lab: Cluster, timeout: float) -> Observation:
    at = datetime.now(UTC)
    limits = declared(lab.workdir)
    limiters = [n for n in lab.nodes if n.name != REDIS]
    deadline = time.monotonic() + timeout
    with (
        httpx.Client(trust_env=False, verify=False) as client,
        ThreadPoolExecutor(max_workers=len(limiters) + 1) as pool,
        ThreadPoolExecutor(max_workers=3 * len(limiters)) as requests,
    ):
        probe = _Probe(client, deadline, requests)
        redis_seen = pool.submit(_redis, lab.node(REDIS), limits, timeout)
        seen = dict(zip([n.name for n in limiters], pool.map(probe.node, limiters), strict=True))
        seen[REDIS] = redis_seen.result()
        answering = [lab.node(name) for name in seen if name != REDIS and seen[name]["reachable"]]
        if not answering and not seen[REDIS]["reachable"]:
            errors = "; ".join(f"{name}: {m['error']}" for name, m in seen.items())
            raise SubjectUnreachable(f"no rate limiter node and no Redis answered: {errors}")
        cluster = probe.cluster(answering)
    cluster["declared"] = limits
    cluster["truth"] = seen[REDIS].pop("truth", {})
    cluster["workload"] = read_workload(lab.workdir)
    return Observation(subject="ratelimiter", at=at, nodes=seen, cluster=cluster)


class _Probe:
    def __init__(self, client: httpx.Client, deadline: float, pool: ThreadPoolExecutor) -> None:
        self.client = client
        self.deadline = deadline
        self.pool = pool

    def _get(self, node: Node, path: str) -> httpx.Response:
        left = max(0.05, self.deadline - time.monotonic())
        return self.client.get(f"{node.url('http')}{path}", timeout=left)

    def node(self, node: Node) -> dict[str, Any]:
        """Health, metrics and counters, asked at once: a slow node costs one round trip."""
        seen: dict[str, Any] = {"reachable": False, "address": node.url("http")}
        started = time.monotonic()
        asks = {p: self.pool.submit(self._get, node, p) for p in ("/health", "/metrics",
                                                                    "/admin/counters")}  # fmt: skip
        try:
            health = asks["/health"].result()
            seen["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            seen["reachable"] = True
            seen["healthy"] = health.status_code == 200
            seen["redis"] = health.json().get("redis")
            seen.update(parse_metrics(asks["/metrics"].result().text))
            counters = asks["/admin/counters"].result()
            if counters.status_code == 200:
                seen["counts"] = {c["key"]: c["count"] for c in counters.json()["counters"]}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            seen.setdefault("error", describe(exc))
        return seen

    def cluster(self, answering: list[Node]) -> dict[str, Any]:
        """The registry and the effective limits, from the first node that can tell."""
        cluster: dict[str, Any] = {"registry": None, "effective": None}
        for node in answering:
            try:
                nodes = self._get(node, "/admin/nodes")
                limits = self._get(node, "/admin/limits")
                if nodes.status_code == 200 and limits.status_code == 200:
                    cluster["registry"] = {n["node"]: n for n in nodes.json()["nodes"]}
                    cluster["effective"] = limits.json()["effective"]
                    return cluster
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                cluster["error"] = describe(exc)
        return cluster


def _redis(node: Node, limits: dict[str, dict[str, int]], timeout: float) -> dict[str, Any]:
    seen: dict[str, Any] = {"reachable": False, "address": f"{node.address}:{node.ports['redis']}"}
    # One try within the look's deadline: redis-py's default retries with backoff would
    # stall a look on a hung Redis for many seconds.
    client = redis.Redis(
        host=node.address, port=node.ports["redis"], socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
    )  # fmt: skip
    try:
        started = time.monotonic()
        client.ping()
        seen["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        seen["reachable"] = seen["healthy"] = True
        truth = client.register_script(TRUTH)
        seen["truth"] = {
            key: int(truth(keys=[f"rl:log:{key}"], args=[limit["window_ms"]])[1])
            for key, limit in limits.items()
        }
    except redis.RedisError as exc:
        seen["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return seen


def parse_metrics(text: str) -> dict[str, Any]:
    """Checks by result, and the latency histogram's cumulative buckets."""
    checks: dict[str, float] = {}
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ratelimiter_checks_total":
                checks[sample.labels.get("result", "?")] = sample.value
            elif sample.name == "ratelimiter_check_seconds_bucket":
                buckets[sample.labels["le"]] = sample.value
    return {"checks": checks, "buckets": buckets}
