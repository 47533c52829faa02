"""What the agent is told about an etcd lab, and shown before its first turn: where things
are and what it may use. It names the tools, not the fixes: there is no playbook."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from operator_ai.core import NETNS, Cluster
from operator_ai.subjects.briefing import log_tails, tool_version


def diagnostics(cluster: Cluster, targets: Sequence[str]) -> list[str]:
    # etcdctl's defaults (a 2 s dial, a 5 s command) make a look at a cluster with members
    # down slow. 2 s still lets a member behind a slow network (300 ms each way) answer, so
    # the snapshot does not call a live member dead.
    lab_dir = cluster.workdir
    etcdctl = f"etcdctl --endpoints={_endpoints(cluster)} --dial-timeout=1s"
    names = [n.name for n in cluster.nodes]
    nodes = [n for n in names if n in targets] or names
    return [
        f"supervisorctl -c {lab_dir}/supervisord.conf status",
        f"{etcdctl} --command-timeout=2s endpoint status -w table",
        f"{etcdctl} --command-timeout=2s member list -w table",
        f"{etcdctl} --command-timeout=2s alarm list",
        log_tails([lab_dir / "logs" / f"{n}.log" for n in nodes]),
        f"du -sh {' '.join(shlex.quote(str(lab_dir / 'data' / n)) for n in nodes)}; "
        f"df -h {shlex.quote(str(lab_dir / 'data' / nodes[0]))}",
    ]


def _endpoints(cluster: Cluster) -> str:
    return ",".join(n.url() for n in cluster.nodes)


def briefing(cluster: Cluster) -> str:
    lab_dir = cluster.workdir
    endpoints = _endpoints(cluster)
    rows = "\n".join(
        f"| {n.name} | {n.url('client')} | {n.url('peer')} | {lab_dir}/conf/{n.name}.yml "
        f"| {lab_dir}/data/{n.name} | {lab_dir}/logs/{n.name}.log |"
        for n in cluster.nodes
    )
    network = (
        f"Each member runs in its own network namespace on {cluster.subnet}; your shell runs in "
        "the lab's ops namespace on the same bridge. You cannot change the network itself: "
        "undoing an injected network fault is not your job, keeping the service healthy "
        "despite it is."
        if cluster.mode == NETNS
        else "All members listen on 127.0.0.1 with distinct ports (loopback mode)."
    )
    return f"""\
## The system: etcd, {len(cluster.nodes)} members, one Raft cluster

etcd is a strongly consistent key-value store replicated with Raft. A write needs a quorum
({len(cluster.nodes) // 2 + 1} of {len(cluster.nodes)}); a member that is down, cut off or far
behind stops counting toward it.

| member | client URL | peer URL | config file | data dir | log |
|---|---|---|---|---|---|
{rows}

{network}

Each member is a supervisord program of the same name with `autorestart=false`: a member
that dies stays down until someone starts it. Members run as the unprivileged user
`{cluster.user}`, as you do. A member reads its flags from its config file (YAML), which you may
edit; `initial-cluster` and `initial-cluster-state` only matter when a member starts with an
empty data dir. The backend quota is set in the config files.

## Tools

- `etcdctl --endpoints={endpoints} endpoint status -w table` (also `endpoint health`,
  `member list`, `alarm list`, `compaction`, `defrag`, `member add/remove`, `get`, `put`).
  {tool_version("etcdctl", "version")}; the members run {tool_version("etcd", "--version")}.
  ETCDCTL_API=3 is the default. Its dial timeout is 2 s and its command timeout 5 s unless
  you pass `--dial-timeout`/`--command-timeout`.
- `supervisorctl -c {lab_dir}/supervisord.conf status|start|stop|restart|tail NAME`
- `curl` against the client URLs: `/health`, `/metrics`, and the JSON gateway under `/v3/`.
- The logs above (`tail`, `grep`), and the usual shell tools.
"""
