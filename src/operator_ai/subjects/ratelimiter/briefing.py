"""What the agent is told about a rate limiter lab. It names the parts and the tools, not
the fixes."""

from __future__ import annotations

import json
from collections.abc import Sequence

from operator_ai.core import NETNS, Cluster
from operator_ai.subjects.briefing import log_tails, tool_version
from operator_ai.subjects.ratelimiter.declared import REDIS, limits_path


def diagnostics(lab: Cluster, targets: Sequence[str]) -> list[str]:
    lab_dir = lab.workdir
    redis = lab.node(REDIS)
    nodes = [n for n in lab.nodes if n.name != REDIS]
    logs = [n.name for n in lab.nodes if n.name in targets] or [n.name for n in lab.nodes]
    health = "; ".join(
        f"echo {n.name}: $(curl -s -m 1 -o /dev/null -w '%{{http_code}}' {n.url('http')}/health)"
        for n in nodes
    )
    return [
        f"supervisorctl -c {lab_dir}/supervisord.conf status",
        health,
        f"curl -s -m 2 {nodes[0].url('http')}/admin/limits",
        f"redis-cli -h {redis.address} -p {redis.ports['redis']} info stats | head -n 20",
        log_tails([lab_dir / "logs" / f"{name}.log" for name in logs]),
    ]


def briefing(lab: Cluster) -> str:
    lab_dir = lab.workdir
    redis = lab.node(REDIS)
    redis_url = f"{redis.address}:{redis.ports['redis']}"
    rows = "\n".join(
        f"| {n.name} | {n.url('http')} | {lab_dir}/logs/{n.name}.log |"
        for n in lab.nodes
        if n.name != REDIS
    )
    limits = json.loads(limits_path(lab_dir).read_text())
    network = (
        f"Each node and Redis run in their own network namespace on {lab.subnet}; your shell "
        "runs in the lab's ops namespace on the same bridge. You cannot change the network "
        "itself; keeping the service correct and available despite a network fault is your job."
        if lab.mode == NETNS
        else "Every process listens on 127.0.0.1 with its own port (loopback mode)."
    )
    return f"""\
## The system: a distributed rate limiter, {len(lab.nodes) - 1} nodes and one Redis

Each node is a FastAPI service (`python -m operator_ai.subjects.ratelimiter.service`).
Clients ask any node `POST /check {{"key": K}}`; the answer is 200 (allowed) or 429
(denied). The limit is a sliding window: at most `limit` requests per key in any
`window_ms`. All state is in Redis, at {redis_url}; nodes share nothing else. A Lua script
makes each check atomic; it scores
each request with the NODE's own clock, so the nodes' clocks must agree.

| node | URL | log |
|---|---|---|
{rows}

Redis: {redis_url}, config {lab_dir}/run/redis.conf (root's: read-only to you), log
{lab_dir}/logs/redis.log.
{network}

Declared limits (the source of truth, {limits_path(lab_dir)}, read-only to you, read by
nodes at start):
```json
{json.dumps(limits, indent=2)}
```

### Keys in Redis (every one expires)
- `rl:log:KEY`: sorted set, one member per admitted request, score = the node's clock in ms.
- `rl:limit:KEY`: hash {{limit, window_ms}}, an override set through the API (24 h TTL).
- `rl:node:NODE`: hash {{node, address, started_at, heartbeat_ms}}, each node's heartbeat.

### Each node's API
- `GET /health` (checks Redis), `GET /metrics` (Prometheus, labelled by node)
- `GET /admin/nodes`, `GET /admin/limits`, `PUT /admin/limits/KEY {{"limit", "window_ms"}}`,
  `DELETE /admin/limits/KEY` (drop an override), `GET /admin/counters[/KEY]`,
  `DELETE /admin/counters/KEY` (reset a counter), `GET /admin/blocks`

### Supervision and tools
Nodes and Redis are supervisord programs of the same names (`redis`, `rl1`...), with
`autorestart=false`: `supervisorctl -c {lab_dir}/supervisord.conf status|start|stop|restart
NAME`. They run as the unprivileged user `{lab.user}`, as you do.
Tools: `curl`, `redis-cli -h {redis.address} -p {redis.ports["redis"]}`
({tool_version("redis-cli", "--version")}; the server: {tool_version("redis-server", "--version")}),
`date`, the logs,
and the usual shell tools. How supervisord starts each program (environment included) is
in {lab_dir}/run/NAME.sh, which only root can read.
"""
