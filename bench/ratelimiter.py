"""Rate limiter throughput and latency: checks per second through one node and through
three, on a redis-server and node processes started for the run on 127.0.0.1.

    .venv/bin/python bench/ratelimiter.py [--seconds 10] [--concurrency 64] [--clients 2]
                                          [--client raw|httpx] [--json]

Load comes from ``--clients`` processes holding ``--concurrency`` requests in flight between
them over keep-alive connections, spread over 100 keys. The default client speaks just
enough HTTP/1.1 to send a check and read the reply, so that on a small machine the nodes,
not the load generator, run out of CPU first; ``--client httpx`` uses httpx's async client
instead, which costs about as much CPU per request as the node does to answer it.

Scenarios: one node with a limit high enough that every check is admitted; three nodes,
round robin, same limit; three nodes on one key limited to 100 per second, so nearly every
check is denied. Each warms up for a second first. Reported per scenario: checks and
admissions per second, client-observed p50/p99, the nodes' own p50/p99 read from their
``ratelimiter_check_seconds`` histograms, and the CPU time the nodes and Redis spent per
check, which stays meaningful when the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from operator_ai.testing.ratelimiter import ratelimiter_nodes
from operator_ai.testing.redis import RedisServer

WARMUP_S = 1.0
REQUEST_TIMEOUT_S = 10.0
KEYS = [f"bench:user:{i}" for i in range(100)]
DENY_KEY = "bench:limited"
DENY_LIMIT = 100
LIMITS = {
    "default": {"limit": 1_000_000_000, "window_ms": 1000},
    "keys": {DENY_KEY: {"limit": DENY_LIMIT, "window_ms": 1000}},
}


@dataclass(frozen=True)
class Job:
    client: str
    urls: list[str]
    keys: list[str]
    concurrency: int
    start_at: float
    seconds: float


class Tally:
    """Latencies and outcomes of the requests started inside the measured interval."""

    def __init__(self, seconds: float) -> None:
        self.measure_from = time.perf_counter() + WARMUP_S
        self.stop_at = self.measure_from + seconds
        self.latencies: list[float] = []
        self.outcomes: Counter[str] = Counter()

    def record(self, started: float, outcome: str) -> None:
        if started >= self.measure_from:
            self.latencies.append(time.perf_counter() - started)
            self.outcomes[outcome] += 1


def _client(job: Job) -> tuple[list[float], dict[str, int]]:
    return asyncio.run(_drive(job))


async def _drive(job: Job) -> tuple[list[float], dict[str, int]]:
    targets = itertools.cycle(itertools.product(job.keys, job.urls))
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    tally = Tally(job.seconds)
    if job.client == "httpx":
        await _drive_httpx(job, targets, tally)
    else:
        await asyncio.gather(*(_raw_connection(targets, tally) for _ in range(job.concurrency)))
    return tally.latencies, dict(tally.outcomes)


async def _drive_httpx(job: Job, targets: Iterator[tuple[str, str]], tally: Tally) -> None:
    pool = httpx.Limits(max_connections=job.concurrency, max_keepalive_connections=job.concurrency)
    async with httpx.AsyncClient(limits=pool, timeout=REQUEST_TIMEOUT_S) as client:

        async def worker() -> None:
            while (started := time.perf_counter()) < tally.stop_at:
                key, url = next(targets)
                try:
                    response = await client.post(f"{url}/check", json={"key": key})
                    tally.record(started, str(response.status_code))
                except httpx.HTTPError as exc:
                    tally.record(started, type(exc).__name__)

        await asyncio.gather(*(worker() for _ in range(job.concurrency)))


async def _raw_connection(targets: Iterator[tuple[str, str]], tally: Tally) -> None:
    """One keep-alive connection per node, one request in flight at a time."""
    streams: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    try:
        while (started := time.perf_counter()) < tally.stop_at:
            key, url = next(targets)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    if url not in streams:
                        parts = urlsplit(url)
                        streams[url] = await asyncio.open_connection(parts.hostname, parts.port)
                    status = await _raw_check(*streams[url], key)
                tally.record(started, status)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                tally.record(started, type(exc).__name__)
                if url in streams:
                    streams.pop(url)[1].close()
    finally:
        for _, writer in streams.values():
            writer.close()


async def _raw_check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> str:
    body = json.dumps({"key": key}).encode()
    writer.write(
        b"POST /check HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(b":") for h in lines) if k.lower() == b"content-length"
    )
    await reader.readexactly(length)
    return lines[0].split(b" ", 2)[1].decode()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _histogram(urls: list[str]) -> dict[float, float]:
    """Cumulative ``ratelimiter_check_seconds`` buckets, summed over the nodes."""
    buckets: dict[float, float] = {}
    with httpx.Client(timeout=5.0) as client:
        for url in urls:
            for family in text_string_to_metric_families(client.get(f"{url}/metrics").text):
                for sample in family.samples:
                    if sample.name == "ratelimiter_check_seconds_bucket":
                        bound = float(sample.labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of the observations made between two scrapes, interpolated inside
    its bucket the way Prometheus's histogram_quantile does."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            width = cumulative - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, cumulative
    return lower


def run_scenario(
    name: str, urls: list[str], keys: list[str], pids: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    per_client = [
        args.concurrency // args.clients + (i < args.concurrency % args.clients)
        for i in range(args.clients)
    ]
    start_at = time.time() + 1.5  # every client process has started by then
    jobs = [Job(args.client, urls, keys, n, start_at, args.seconds) for n in per_client if n]
    before = _histogram(urls)
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        pending = pool.map_async(_client, jobs)
        # CPU is sampled around the measured interval only, not the warm-up.
        time.sleep(max(0.0, start_at + WARMUP_S - time.time()))
        cpu_before = {role: _cpu_seconds(pid) for role, pid in pids.items()}
        time.sleep(args.seconds)
        cpu_after = {role: _cpu_seconds(pid) for role, pid in pids.items()}
        outputs = pending.get(timeout=args.seconds + 60)
    after = _histogram(urls)

    latencies = sorted(x for lat, _ in outputs for x in lat)
    outcomes: Counter[str] = Counter()
    for _, counts in outputs:
        outcomes.update(counts)
    total = sum(outcomes.values())
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    node_cpu = sum(cpu_after[r] - cpu_before[r] for r in pids if r != "redis")
    redis_cpu = cpu_after["redis"] - cpu_before["redis"]
    report = {
        "nodes": len(urls),
        "checks_per_s": round(total / args.seconds, 1),
        "admitted_per_s": round(outcomes["200"] / args.seconds, 1),
        "client_p50_ms": round(cuts[49] * 1000, 2),
        "client_p99_ms": round(cuts[98] * 1000, 2),
        "server_p50_ms": round(_bucket_quantile(before, after, 0.50) * 1000, 2),
        "server_p99_ms": round(_bucket_quantile(before, after, 0.99) * 1000, 2),
        "node_cpu_us_per_check": round(node_cpu / max(total, 1) * 1e6),
        "redis_cpu_us_per_check": round(redis_cpu / max(total, 1) * 1e6),
        "node_cpu_busy": round(node_cpu / args.seconds, 2),
        "outcomes": dict(sorted(outcomes.items())),
    }
    if not args.json:
        r = report
        print(
            f"  {name:<20} {r['checks_per_s']:>7,.0f} checks/s"
            f"  admitted {r['admitted_per_s']:>7,.0f}/s"
            f"  client p50 {r['client_p50_ms']:>6.2f} p99 {r['client_p99_ms']:>6.2f} ms"
            f"  server p50 {r['server_p50_ms']:>5.2f} p99 {r['server_p99_ms']:>6.2f} ms"
            f"  CPU/check node {r['node_cpu_us_per_check']} us"
            f" redis {r['redis_cpu_us_per_check']} us"
            f"  nodes busy {r['node_cpu_busy']:.2f} CPU  {r['outcomes']}",
            flush=True,
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    args.clients = max(1, min(args.clients, args.concurrency))

    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "clients": args.clients,
        "client": args.client,
    }
    with tempfile.TemporaryDirectory(prefix="operator-bench-rl-") as tmp:
        workdir = Path(tmp)
        limits = workdir / "limits.json"
        limits.write_text(json.dumps(LIMITS))
        with (
            RedisServer(workdir / "redis") as redis,
            ratelimiter_nodes(3, redis.url, limits, workdir, heartbeat=1.0) as nodes,
        ):
            assert redis.pid is not None
            urls = [n.url for n in nodes]
            pids = {n.node_id: n.pid for n in nodes if n.pid is not None} | {"redis": redis.pid}
            one = {nodes[0].node_id: pids[nodes[0].node_id], "redis": redis.pid}
            if not args.json:
                print(
                    f"{args.concurrency} in flight from {args.clients} {args.client} client "
                    f"processes, {args.seconds:g} s per run, {os.cpu_count()} CPUs",
                    flush=True,
                )
            report["one_node"] = run_scenario("1 node, admitted", urls[:1], KEYS, one, args)
            report["three_nodes"] = run_scenario("3 nodes, admitted", urls, KEYS, pids, args)
            report["three_nodes_denied"] = run_scenario(
                f"3 nodes, {DENY_LIMIT}/s limit", urls, [DENY_KEY], pids, args
            )
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
