"""The TiKV lab as a compose file: 3 PD, 3 TiKV, Prometheus, and a go-ycsb load.

Service names are the node names (pd1..3, tikv1..3), which is how they address each other on
the lab network; container names carry the lab's prefix so two labs never collide. Each
store's data lives on a small ext4 disk of its own (a loop device over a file in the lab
dir), so `disk_pressure` fills a real filesystem and not the host's. Prometheus scrapes each
store's *status* port (20180), which is what the PromQL in ``observe`` matches on.

Flags and images: TiKV's and PD's command-line flag docs (pingcap/docs), the go-ycsb image's
entry point and /workloads (pingcap/go-ycsb Dockerfile).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from operator_ai.core import Cluster, Node
from operator_ai.errors import LabError
from operator_ai.lab import docker
from operator_ai.lab.state import LabState

VERSION = "v7.5.1"
IMAGES = {
    "pd": f"pingcap/pd:{VERSION}",
    "tikv": f"pingcap/tikv:{VERSION}",
    "prometheus": "prom/prometheus:v2.49.1",
    "ycsb": "pingcap/go-ycsb:latest",
}
PD_CLIENT, PD_PEER = 2379, 2380
TIKV_PORT, TIKV_STATUS = 20160, 20180
PROMETHEUS_PORT = 9090
DISK_SIZE = "2G"
TIKV_CONFIG = """\
# Written by `operator lab up tikv`. TiKV holds back the larger of 5% of its disk and
# storage.reserve-space (5 GiB by default) and refuses writes once its free space falls
# under it; a lab store's whole disk is 2 GiB, so the lab reserves nothing and the
# monitor's low_disk_space (under 20% free) speaks first.
[storage]
reserve-space = "0MB"
"""
OPS_DOCKERFILE = f"""\
# The agent's sandbox image: pd-ctl and tikv-ctl from the cluster's own images, curl and jq.
FROM {IMAGES["pd"]} AS pd
FROM {IMAGES["tikv"]} AS tikv
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl jq ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
COPY --from=pd /pd-ctl /usr/local/bin/pd-ctl
COPY --from=tikv /tikv-ctl /usr/local/bin/tikv-ctl
RUN useradd --uid 10001 --create-home operator
USER operator
"""


def topology(nodes: int) -> dict[str, dict[str, int]]:
    pds = {f"pd{i}": {"client": PD_CLIENT} for i in (1, 2, 3)}
    stores = {f"tikv{i}": {"status": TIKV_STATUS} for i in range(1, nodes + 1)}
    return {**pds, **stores, "prometheus": {"http": PROMETHEUS_PORT}}


def names(nodes: Iterable[Node], role: str) -> list[str]:
    """The nodes of one role: "pd" or "tikv"."""
    return [n.name for n in nodes if n.name.startswith(role)]


def pd_endpoints(nodes: Iterable[Node]) -> list[str]:
    """PD's client addresses on the lab network."""
    return [f"{p}:{PD_CLIENT}" for p in names(nodes, "pd")]


def project(cluster: Cluster) -> str:
    """The compose project (and container prefix) of a TiKV lab."""
    try:
        return str(cluster.extra["project"])
    except KeyError:
        raise LabError(
            f"{cluster.name} was started by an older Operator and does not name its compose "
            "project",
            hint=f"`operator lab down --lab {cluster.name}`, then `lab up` again.",
        ) from None


def ops_image(prefix: str) -> str:
    return f"operator-tikv-ops:{prefix}"


def prometheus_config(stores: list[str], pds: list[str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "scrape_configs": [
            {
                "job_name": "tikv",
                "honor_labels": True,
                "static_configs": [{"targets": [f"{s}:{TIKV_STATUS}" for s in stores]}],
            },
            {
                "job_name": "pd",
                "static_configs": [{"targets": [f"{p}:{PD_CLIENT}" for p in pds]}],
            },
        ],
    }


def services(state: LabState) -> dict[str, Any]:
    """The compose ``services``: one per node, plus the load and the agent's tools."""
    pds = names(state.nodes, "pd")
    stores = names(state.nodes, "tikv")
    cluster = ",".join(f"{p}=http://{p}:{PD_PEER}" for p in pds)
    endpoints = ",".join(pd_endpoints(state.nodes))
    out: dict[str, Any] = {}

    def service(name: str, **spec: Any) -> None:
        node = state.node(name)
        published = [f"127.0.0.1:{node.ports[port]}:{inner}" for port, inner in spec.pop("ports")]
        out[name] = {
            "container_name": docker.container(state.prefix, name),
            "restart": "no",
            "networks": ["lab"],
            "ports": published,
            **spec,
        }

    for pd in pds:
        service(
            pd,
            image=IMAGES["pd"],
            ports=[("client", PD_CLIENT)],
            command=[
                f"--name={pd}",
                "--data-dir=/data",
                f"--client-urls=http://0.0.0.0:{PD_CLIENT}",
                f"--advertise-client-urls=http://{pd}:{PD_CLIENT}",
                f"--peer-urls=http://0.0.0.0:{PD_PEER}",
                f"--advertise-peer-urls=http://{pd}:{PD_PEER}",
                f"--initial-cluster={cluster}",
            ],
            volumes=[f"{pd}-data:/data"],
        )
    for store in stores:
        service(
            store,
            image=IMAGES["tikv"],
            ports=[("status", TIKV_STATUS)],
            command=[
                f"--addr=0.0.0.0:{TIKV_PORT}",
                f"--advertise-addr={store}:{TIKV_PORT}",
                f"--status-addr=0.0.0.0:{TIKV_STATUS}",
                f"--advertise-status-addr={store}:{TIKV_STATUS}",
                "--data-dir=/data",
                f"--pd={endpoints}",
                "--config=/conf/tikv.toml",
            ],
            volumes=[f"{store}-data:/data", "./conf/tikv.toml:/conf/tikv.toml:ro"],
            depends_on=pds,
        )
    service(
        "prometheus",
        image=IMAGES["prometheus"],
        ports=[("http", PROMETHEUS_PORT)],
        volumes=["./conf/prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
        depends_on=stores,
    )
    # Neither starts with `up`: `operator lab load tikv` runs ycsb, and the agent's sandbox
    # runs each command in a container of the ops image, which `up` builds.
    out["ycsb"] = {"image": IMAGES["ycsb"], "networks": ["lab"], "profiles": ["load"]}
    out["ops"] = {
        "image": ops_image(state.prefix),
        "build": {"context": "./conf/ops"},
        "profiles": ["tools"],
        "networks": ["lab"],
    }
    return out


def volumes(pds: list[str], disks: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {f"{p}-data": {} for p in pds}
    for store, device in disks.items():
        found[f"{store}-data"] = {
            "driver": "local",
            "driver_opts": {"type": "ext4", "device": device},
        }
    return found


def write(state: LabState, lab_dir: Path) -> dict[str, Any]:
    """Write TiKV's and Prometheus's configs and the ops image's Dockerfile; give each store
    its disk; return the compose file."""
    stores = names(state.nodes, "tikv")
    pds = names(state.nodes, "pd")
    (lab_dir / "conf" / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(stores, pds)))
    (lab_dir / "conf" / "tikv.toml").write_text(TIKV_CONFIG)
    (lab_dir / "conf" / "ops").mkdir(parents=True, exist_ok=True)
    (lab_dir / "conf" / "ops" / "Dockerfile").write_text(OPS_DOCKERFILE)
    disks = {s: docker.loop_disk(lab_dir / "disks" / f"{s}.img", DISK_SIZE) for s in stores}
    state.extra.update(
        prometheus=state.node("prometheus").url("http"),
        ops_image=ops_image(state.prefix),
        project=state.prefix,
    )
    return {
        "name": state.prefix,
        "services": services(state),
        "networks": {"lab": {"name": docker.lab_network(state.prefix)}},
        "volumes": volumes(pds, disks),
    }
