"""Rate limiter nodes as real processes
(``python -m operator_ai.subjects.ratelimiter.service``) on 127.0.0.1, for tests and
benchmarks. Each is stopped by its PID; a block that starts nodes stops them even when it
fails.

    with ratelimiter_nodes(3, redis_url, limits_file, tmp_path) as nodes:
        httpx.post(f"{nodes[0].url}/check", json={"key": "user:1"})
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from operator_ai.lab.network import free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 5


class NodeStartError(RuntimeError):
    """A node exited or did not answer in time; the message holds the end of its log."""


class RateLimiterNode:
    """One node process. ``start`` launches it; ``wait_ready`` waits for HTTP."""

    def __init__(
        self,
        node_id: str,
        redis_url: str,
        limits: Path,
        log_dir: Path,
        heartbeat: float = 0.5,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.node_id = node_id
        self.redis_url = redis_url
        self.limits = limits
        self.log = log_dir / f"{node_id}.log"
        self.heartbeat = heartbeat
        self.extra_args = extra_args
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "operator_ai.subjects.ratelimiter.service",
            "--node-id", self.node_id,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--redis", self.redis_url,
            "--limits", str(self.limits),
            "--heartbeat", str(self.heartbeat),
            "--log-level", "warning",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        self.port = free_port()
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the node answers /health (200, or 503 while Redis is away)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    raise NodeStartError(f"{self.node_id} exited: {self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    client.get(f"{self.url}/health")
                    return
                time.sleep(0.05)
        raise NodeStartError(f"{self.node_id} did not answer within {timeout} s")

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the node dies without leaving the registry."""
        self.signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if that takes too long; reap the process."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"


def _start_all(nodes: list[RateLimiterNode]) -> None:
    # Start every process first, then wait: the nodes' imports overlap.
    pending = list(nodes)
    for _ in range(PORT_ATTEMPTS):
        for node in pending:
            node.start()
        failed = []
        for node in pending:
            try:
                node.wait_ready()
            except NodeStartError:
                if "address already in use" not in node.log_tail().lower():
                    raise
                node.stop()  # lost a race for its port; try another
                failed.append(node)
        if not failed:
            return
        pending = failed
    raise NodeStartError(f"could not find free ports for {[n.node_id for n in pending]}")


@contextlib.contextmanager
def ratelimiter_nodes(
    count: int,
    redis_url: str,
    limits: Path,
    log_dir: Path,
    heartbeat: float = 0.5,
    prefix: str = "rl",
) -> Iterator[list[RateLimiterNode]]:
    """Start ``count`` nodes named ``{prefix}1``... on free ports; stop them afterwards."""
    nodes = [
        RateLimiterNode(f"{prefix}{i}", redis_url, limits, log_dir, heartbeat)
        for i in range(1, count + 1)
    ]
    try:
        _start_all(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.signal(signal.SIGTERM)  # all at once, so their shutdowns overlap
        for node in nodes:
            node.stop()
