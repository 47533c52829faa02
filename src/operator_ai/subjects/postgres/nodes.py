"""What a PostgreSQL lab is made of: the DCS's etcd members (`dcsN`) and the PostgreSQL
members (`pgN`), each a Patroni that runs its own PostgreSQL, and how a client reaches them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

from operator_ai.core import Cluster, Node

DCS = "dcs"
MEMBER = "pg"
"""The prefixes of the node names."""
POSTGRES, API = "postgres", "api"
"""A member's port names: PostgreSQL's and Patroni's REST API."""
POSTGRES_PORT, API_PORT = 5432, 8008
CLIENT, PEER = "client", "peer"
"""A DCS member's port names, as etcd's own."""
SCOPE = "lab"
"""The Patroni cluster's name (its `scope`): where its keys live in the DCS."""
SUPERUSER, APP = "postgres", "app"
"""The roles: the superuser the monitor and the agent use, and the application's."""
DATABASE = "postgres"


def members(cluster: Cluster) -> list[Node]:
    return [n for n in cluster.nodes if POSTGRES in n.ports]


def dcs(cluster: Cluster) -> list[Node]:
    return [n for n in cluster.nodes if CLIENT in n.ports]


def password(cluster: Cluster) -> str | None:
    """Every role's password in a lab; an external cluster names its own in ``extra``."""
    value = cluster.extra.get("password")
    return str(value) if value else None


def conninfo(cluster: Cluster, nodes: Sequence[Node], user: str = SUPERUSER, **more: Any) -> str:
    """A libpq connection string for ``nodes`` (several: the client picks by
    ``target_session_attrs``)."""
    return psycopg.conninfo.make_conninfo(
        host=",".join(n.address for n in nodes),
        port=",".join(str(n.ports[POSTGRES]) for n in nodes),
        user=user,
        password=password(cluster) or "",
        dbname=DATABASE,
        **{"application_name": "operator", **more},
    )


def connect(
    cluster: Cluster, node: Node, timeout: float, user: str = SUPERUSER
) -> psycopg.Connection[Any]:
    """An autocommit session on one member that gives up within about ``timeout``: libpq's
    connect timeout (whole seconds, at least 2), the server's statement timeout, and TCP's
    own for a peer that stops answering mid-query (a partition)."""
    info = conninfo(cluster, [node], user, connect_timeout=max(2, round(timeout)),
                    tcp_user_timeout=int(timeout * 1000),
                    options=f"-c statement_timeout={int(timeout * 1000)}")  # fmt: skip
    return psycopg.connect(info, autocommit=True)


def api_url(node: Node, path: str) -> str:
    return f"http://{node.address}:{node.ports[API]}{path}"


def api(node: Node, path: str, timeout: float) -> httpx.Response:
    return httpx.get(api_url(node, path), timeout=timeout)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:300]}"


def config_path(workdir: Path, member: str) -> Path:
    """A member's Patroni config, which patronictl reads too."""
    return workdir / "conf" / f"{member}.yml"
