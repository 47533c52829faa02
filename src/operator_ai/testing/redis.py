"""A throwaway Redis server: a plain ``redis-server`` process on 127.0.0.1 with persistence
off, stopped by its PID. Tests and benchmarks use it; the lab runs its own Redis.

    with redis_server(tmp_path) as url:            # redis://127.0.0.1:PORT/0
        ...

    server = RedisServer(tmp_path)                 # when a test needs an outage
    server.start(); server.stop(); server.start()  # same port, empty dataset again
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from operator_ai.lab.network import free_port

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 5


class RedisServerError(RuntimeError):
    """redis-server is missing, or did not start; the message says why."""


def ping(port: int, timeout: float = 0.5) -> bool:
    """True if a Redis on 127.0.0.1:``port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process, bound to 127.0.0.1, its files in ``directory``.

    The port is chosen on the first start and kept across restarts, so clients can
    reconnect after an outage the test caused.
    """

    def __init__(self, directory: Path, port: int | None = None, binary: str = "redis-server"):
        found = shutil.which(binary)
        if found is None:
            raise RedisServerError(f"{binary} not found; `make setup` installs redis-server")
        self.binary = found
        self.directory = directory
        self.port = port
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RedisServerError("the server has not been started yet")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        if self.pid is not None:
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(PORT_ATTEMPTS):
            if self.port is None:
                self.port = free_port()
            if self._try_start(self.port):
                return self.url
            if self._fixed_port:
                break
            # Another process took the port between our probe and the bind; pick again.
            self.port = None
        raise RedisServerError(f"redis-server did not start: {self._log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it; the port stays reserved."""
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

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _try_start(self, port: int) -> bool:
        log = self.directory / "redis.log"
        argv = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip
        with open(log, "ab") as out:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc.wait()
                self._proc = None
                return False
            if ping(port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def _log_tail(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")[-600:]
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def redis_server(directory: Path | None = None) -> Iterator[str]:
    """Run a server for the duration of the block; yield its URL. Without ``directory``,
    its files go to a temporary directory removed afterwards."""
    scratch = None
    if directory is None:
        directory = scratch = Path(tempfile.mkdtemp(prefix="operator-redis-"))
    try:
        with RedisServer(directory) as server:
            yield server.url
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
