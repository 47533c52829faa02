"""A throwaway PostgreSQL server from the Debian binaries, run as an unprivileged user in a
temporary directory, listening only on 127.0.0.1."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from operator_ai.lab.network import free_port

# Users a root-run test may start PostgreSQL as; PostgreSQL refuses to run as root.
UNPRIVILEGED_USERS = ("operator-lab", "postgres")


class PostgresUnavailable(RuntimeError):
    """The binaries or an unprivileged user are missing; the reason says which."""


def find_bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found; `make setup` installs them (as root)"
        )
    return Path(candidates[-1]).parent


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        f"running as root and none of the users {UNPRIVILEGED_USERS} exists; "
        "`make setup` creates operator-lab"
    )


@contextlib.contextmanager
def postgres_server(durable: bool = False) -> Iterator[str]:
    """Start a server; yield its URL (``postgresql://operator@127.0.0.1:PORT/postgres``).

    ``durable=False`` turns fsync off, which suits tests; benchmarks keep it on.
    """
    bindir, user = find_bindir(), _run_as()
    root = Path(tempfile.mkdtemp(prefix="operator-pg-"))
    uid, gid = (user.pw_uid, user.pw_gid) if user else (None, None)
    groups: list[int] | None = [] if user else None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    proc: subprocess.Popen[bytes] | None = None
    try:
        if user:
            os.chown(root, user.pw_uid, user.pw_gid)
        data = root / "data"
        subprocess.run(
            [
                bindir / "initdb",
                "-D",
                data,
                "-U",
                "operator",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=root,
            env=env,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        port = free_port()
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}"]
        if not durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        log = open(root / "server.log", "wb")  # noqa: SIM115 - closed with the server
        proc = subprocess.Popen(
            [bindir / "postgres", "-D", data, "-p", str(port), *settings],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        log.close()
        _wait_ready(proc, port, root / "server.log")
        yield f"postgresql://operator@127.0.0.1:{port}/postgres"
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PostgresUnavailable(f"postgres exited: {log.read_text(errors='replace')[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            time.sleep(0.2)  # the port is open; give the startup process a moment
            return
        time.sleep(0.1)
    raise PostgresUnavailable("postgres did not start within 30 s")


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server at ``url``; return its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name
