"""Run one rate limiter node:

    python -m operator_ai.subjects.ratelimiter.service --node-id rl1 --host 0.0.0.0 --port 8080 \\
        --redis redis://HOST:PORT/0 --limits limits.json [--heartbeat 1.0] \\
        [--advertise http://ADDR:PORT] [--log-level info]

One process, one uvicorn worker, logs on stderr. Bad arguments or an unreadable limits file
exit with status 2 and a message; a Redis that is down does not stop the node, which then
reports itself unhealthy and refuses checks until Redis is back.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from prometheus_client import disable_created_metrics

from operator_ai.subjects.ratelimiter.service.app import NodeConfig, create_app
from operator_ai.subjects.ratelimiter.service.errors import InvalidConfig
from operator_ai.subjects.ratelimiter.service.limits import load_limits

NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m operator_ai.subjects.ratelimiter.service",
        description="One node of the distributed rate limiter (sliding window in Redis).",
    )
    parser.add_argument("--node-id", required=True, help="this node's name, e.g. rl1")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--redis", required=True, help="Redis URL, redis://HOST:PORT/DB")
    parser.add_argument("--limits", required=True, type=Path, help="declared limits (JSON)")
    parser.add_argument(
        "--heartbeat", type=float, default=1.0, help="registry heartbeat interval in seconds"
    )
    parser.add_argument(
        "--advertise", help="URL other parties reach this node at (default: from host/port)"
    )
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    return parser


def _advertise(host: str, port: int) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"http://[{ip}]:{port}" if ip.version == 6 else f"http://{ip}:{port}"


def node_config(args: argparse.Namespace) -> NodeConfig:
    """Check the arguments and read the limits file; problems become ``InvalidConfig``."""
    if not NODE_ID.fullmatch(args.node_id):
        raise InvalidConfig(
            f"invalid --node-id {args.node_id!r}",
            hint="Use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
        )
    if not 0 < args.port < 65536:
        raise InvalidConfig(f"invalid --port {args.port}", hint="Use a port from 1 to 65535.")
    if not 0.05 <= args.heartbeat <= 3600:
        raise InvalidConfig(
            f"invalid --heartbeat {args.heartbeat}", hint="Use 0.05 to 3600 seconds."
        )
    if not args.redis.startswith(REDIS_SCHEMES):
        raise InvalidConfig(
            f"invalid --redis {args.redis!r}",
            hint="Use redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0.",
        )
    if args.advertise is not None and not args.advertise.startswith(("http://", "https://")):
        raise InvalidConfig(
            f"invalid --advertise {args.advertise!r}", hint="Use http://ADDRESS:PORT."
        )
    return NodeConfig(
        node_id=args.node_id,
        redis_url=args.redis,
        limits_path=args.limits,
        declared=load_limits(args.limits),
        advertise=args.advertise or _advertise(args.host, args.port),
        heartbeat_s=args.heartbeat,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve until SIGTERM or SIGINT; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = node_config(args)
        app = create_app(config)
    except InvalidConfig as exc:
        print(f"ratelimiter: error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    # The *_created series only double the scrape; Prometheus derives resets by itself.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            # One line per check would drown the log (and the CPU) under load.
            access_log=False,
            lifespan="on",
        )
    )
    server.run()
    return 0 if server.started else 1
