"""What the agent is told about a TiKV lab: roles, names, tools. No fixes: no playbook."""

from __future__ import annotations

from collections.abc import Sequence

from operator_ai.core import Cluster
from operator_ai.lab import docker
from operator_ai.subjects.tikv import compose
from operator_ai.subjects.tikv.compose import PD_CLIENT, TIKV_PORT, TIKV_STATUS, names
from operator_ai.subjects.tikv.observe import queries


def diagnostics(lab: Cluster, targets: Sequence[str]) -> list[str]:
    pd = f"http://{names(lab.nodes, 'pd')[0]}:{PD_CLIENT}"
    return [
        f"curl -s -m 3 {pd}/pd/api/v1/health",
        f"curl -s -m 3 {pd}/pd/api/v1/stores",
        f"curl -s -m 3 {pd}/pd/api/v1/regions/check/miss-peer | head -c 2000",
    ]


def briefing(lab: Cluster) -> str:
    project = compose.project(lab)
    pds, stores = names(lab.nodes, "pd"), names(lab.nodes, "tikv")
    rows = "\n".join(
        f"| {n.name} | {docker.container(project, n.name)} | "
        + (
            f"{n.name}:{PD_CLIENT}"
            if n.name in pds
            else f"{n.name}:{TIKV_PORT} (status {n.name}:{TIKV_STATUS})"
            if n.name in stores
            else f"{n.name}:9090"
        )
        + " |"
        for n in lab.nodes
    )
    pd = f"http://{pds[0]}:{PD_CLIENT}"
    promql = "\n".join(
        f"- {name}: `{q}`" for name, q in queries([f"{s}:{TIKV_STATUS}" for s in stores]).items()
    )
    return f"""\
## The system: TiKV, {len(stores)} stores and {len(pds)} PD members, in Docker

TiKV is a distributed transactional key-value store. Data is split into regions, each a Raft
group of (by default) 3 peers on different stores; one peer per region is its leader. PD
(the Placement Driver) is a Raft cluster of its own, built on etcd: its leader keeps the
cluster's metadata and timestamps, watches store heartbeats, and schedules regions and
leaders (balance, repair of missing replicas, evictions). A store PD has not heard from for
about 20 s is Disconnected; after `max-store-down-time` (30 min by default) it is Down, and
PD starts re-creating its replicas elsewhere.

| node | container | address on the lab network |
|---|---|---|
{rows}

The nodes are containers of the compose project `{project}` on the network
`{docker.lab_network(project)}`; the names above resolve there, and your shell runs in a container
on the same network. Containers do not restart by themselves, and your shell has no access
to Docker, so it cannot start, stop or restart them: what you can change is the cluster,
through PD and TiKV. If a container must be started, say so plainly in your final answer
and a human will do it. The lab dir is `/lab` in your shell, read-only, with the compose
file at `/lab/compose.yaml`. Each store's data dir (`/data`) is a small ext4 disk of its own.

## Tools

- `pd-ctl -u {pd} store` (also `member`, `health`, `region check miss-peer|down-peer|
  pending-peer`, `scheduler show|add|remove`, `operator show`, `config show|set`,
  `store delete ID`, `member leader show|transfer NAME`).
- `tikv-ctl --host STORE:{TIKV_PORT} ...` and `tikv-ctl --pd {pds[0]}:{PD_CLIENT} ...`.
- `curl {pd}/pd/api/v1/stores` (and `/members`, `/health`, `/regions/check/miss-peer`).
- Prometheus at `http://prometheus:9090/api/v1/query?query=...`; what the monitor asks:
{promql}
- `curl http://STORE:{TIKV_STATUS}/metrics` for one store's raw metrics.
"""
