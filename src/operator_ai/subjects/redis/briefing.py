"""What the agent is told about a Redis with Sentinel lab, and shown before its first turn:
the parts, the tools and what it may change. No playbook."""

from __future__ import annotations

from collections.abc import Sequence

from operator_ai.core import NETNS, Cluster, Node
from operator_ai.subjects.briefing import log_tails, tool_version
from operator_ai.subjects.redis.nodes import MASTER, endpoint, quorum, sentinels, servers


def _cli(node: Node) -> str:
    host, port = endpoint(node)
    return f"redis-cli -h {host} -p {port}"


def diagnostics(cluster: Cluster, targets: Sequence[str]) -> list[str]:
    lab_dir = cluster.workdir
    names = [n.name for n in cluster.nodes]
    logs = [n for n in names if n in targets] or names
    # `timeout 2`: redis-cli would wait for a paused server for ever.
    replication = "; ".join(
        f"echo '== {n.name}'; timeout 2 {_cli(n)} info replication | grep -E "
        "'^(role|master_host|master_port|master_link_status|connected_slaves|slave[0-9]|"
        "master_repl_offset|min_slaves)'"
        for n in servers(cluster)
    )
    memory = "; ".join(
        f'echo "{n.name}: $(timeout 2 {_cli(n)} info memory | grep -E '
        "'^(used_memory_human|maxmemory_human|maxmemory_policy):' | tr -d '\\r' | tr '\\n' ' ')\""
        for n in servers(cluster)
    )
    views = "; ".join(
        f'echo "{n.name}: names $(timeout 2 {_cli(n)} sentinel get-master-addr-by-name {MASTER} '
        f"| tr '\\n' ' '), $(timeout 2 {_cli(n)} sentinel ckquorum {MASTER})\""
        for n in sentinels(cluster)
    )
    return [
        f"supervisorctl -c {lab_dir}/supervisord.conf status",
        replication,
        views,
        memory,
        log_tails([lab_dir / "logs" / f"{n}.log" for n in logs]),
    ]


def briefing(cluster: Cluster) -> str:
    lab_dir = cluster.workdir
    server_nodes, sentinel_nodes = servers(cluster), sentinels(cluster)

    def row(node: Node) -> str:
        host, port = endpoint(node)
        return (f"| {node.name} | {host}:{port} | {lab_dir}/conf/{node.name}.conf "
                f"| {lab_dir}/data/{node.name} | {lab_dir}/logs/{node.name}.log |")  # fmt: skip

    rows = "\n".join(row(n) for n in [*server_nodes, *sentinel_nodes])
    network = (
        f"Each server runs in its own network namespace on {cluster.subnet}, with its sentinel "
        "beside it in the same namespace (the same address), as on one host. Your shell runs "
        "in the lab's ops namespace on the same bridge. You cannot change the network itself: "
        "undoing an injected network fault is not your job, keeping the service healthy "
        "despite it is."
        if cluster.mode == NETNS
        else "Every server and sentinel listens on 127.0.0.1 with its own port (loopback mode)."
    )
    count = len(sentinel_nodes)
    return f"""\
## The system: Redis with Sentinel, {len(server_nodes)} servers and {count} sentinels

One server is the primary and takes the writes; the others replicate it, asynchronously.
The sentinels monitor the primary under the name `{MASTER}` (quorum {quorum(count)} of
{count}) and, when enough of them agree it is down, promote a replica and repoint the others.
Clients never hold a fixed address: they ask a sentinel for the primary of `{MASTER}`
(redis-py's Sentinel client, one per sentinel, each asking its own sentinel first) and write
keys `load:RUN:N`, which they read back later.

| node | address | config file | data dir | log |
|---|---|---|---|---|
{rows}

{network}

Each server and sentinel is a supervisord program of the same name with
`autorestart=false`: one that dies stays down until someone starts it. They run as the
unprivileged user `{cluster.user}`, as you do. The config files are yours to edit; a server
reads its own at start. Sentinels rewrite their files themselves as they learn about the
others.

## Tools

- `{_cli(server_nodes[0])}` for a server, `{_cli(sentinel_nodes[0])}` for a sentinel
  (`SENTINEL MASTER {MASTER}`, `SENTINEL REPLICAS {MASTER}`, `SENTINEL SENTINELS {MASTER}`,
  `SENTINEL CKQUORUM {MASTER}`, `SENTINEL FAILOVER {MASTER}`, `INFO`, `CONFIG GET|SET`...).
  {tool_version("redis-cli", "--version")}; the servers and sentinels run
  {tool_version("redis-server", "--version")}.
- `supervisorctl -c {lab_dir}/supervisord.conf status|start|stop|restart|tail NAME`
- The logs above (`tail`, `grep`), and the usual shell tools.
"""
