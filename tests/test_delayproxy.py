"""The delay proxy in a real network namespace, behind a real nft redirect rule."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

DELAY = 0.2
ECHO_PORT = 7000
PROXY_PORT = 7001
LAB_USER = "operator-lab"


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces and nft rules"
    for tool in ("ip", "nft", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` on PATH"
    try:
        pwd.getpwnam(LAB_USER)
    except KeyError:
        return f"needs the unprivileged user {LAB_USER!r}"
    return None


_MISSING = _missing_prerequisite()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

ECHO_SERVER = r"""
import socket, sys, threading

def echo(conn):
    with conn:
        while data := conn.recv(1 << 16):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""

CLIENT = r"""
import json, os, socket, sys, threading, time

mode, port = sys.argv[1], int(sys.argv[2])
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

def read_to_eof():
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)

if mode == "ping":
    rtts = []
    for _ in range(3):
        start = time.monotonic()
        sock.sendall(b"ping")
        got = b""
        while len(got) < 4:
            chunk = sock.recv(4 - len(got))
            if not chunk:
                sys.exit("connection closed mid-echo")
            got += chunk
        rtts.append(time.monotonic() - start)
    sock.shutdown(socket.SHUT_WR)
    print(json.dumps({"rtts": rtts, "after_eof": read_to_eof().decode()}))
elif mode == "bulk":
    payload = os.urandom(int(sys.argv[3]))
    def send():
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
    sender = threading.Thread(target=send)
    start = time.monotonic()
    sender.start()
    echoed = read_to_eof()
    seconds = time.monotonic() - start
    sender.join()
    print(json.dumps({"seconds": seconds, "intact": echoed == payload, "size": len(echoed)}))
elif mode == "probe":
    start = time.monotonic()
    data = read_to_eof()
    print(json.dumps({"seconds": time.monotonic() - start, "data": data.decode()}))
"""


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr}"
    return done.stdout


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM `proc`, kill it if it lingers; its exit code and remaining stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err or ""


class Namespace:
    """A throwaway network namespace with lo up, an echo server, and the processes in it."""

    def __init__(self) -> None:
        self.name = f"opdp-{secrets.token_hex(4)}"
        self.procs: list[subprocess.Popen[str]] = []

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def start(self, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.exec(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def client(self, *args: str) -> dict[str, Any]:
        """Run the client script inside the namespace as the unprivileged lab user."""
        result = _run(
            *self.exec(
                "setpriv",
                f"--reuid={LAB_USER}",
                f"--regid={LAB_USER}",
                "--clear-groups",
                sys.executable,
                "-c",
                CLIENT,
                *args,
            )
        )
        parsed: dict[str, Any] = json.loads(result)
        return parsed

    def redirect(self, port: int, to_port: int) -> None:
        """nft: the lab user's connections to `port` go to the proxy on `to_port` instead."""
        uid = pwd.getpwnam(LAB_USER).pw_uid
        rules = f"""
            table ip opdp {{
                chain output {{
                    type nat hook output priority -100; policy accept;
                    meta skuid {uid} tcp dport {port} redirect to :{to_port}
                }}
            }}
        """
        _run(*self.exec("nft", "-f", "-"), stdin=rules)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    ns = Namespace()
    created = subprocess.run(["ip", "netns", "add", ns.name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        _run("ip", "-n", ns.name, "link", "set", "lo", "up")
        echo = ns.start(sys.executable, "-c", ECHO_SERVER, str(ECHO_PORT))
        assert echo.stdout is not None
        assert echo.stdout.readline().strip() == "ready", _stop(echo)[1]
        yield ns
    finally:
        for proc in ns.procs:
            _stop(proc)
        subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True)


@pytest.fixture
def proxy(netns: Namespace) -> subprocess.Popen[str]:
    proc = netns.start(
        sys.executable,
        "-m",
        "operator_ai.lab.delayproxy",
        "--port",
        str(PROXY_PORT),
        "--delay-ms",
        str(int(DELAY * 1000)),
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "listening on 0.0.0.0:7001" in first, first + _stop(proc)[1]
    return proc


def test_round_trip_is_delayed_once_each_way(
    netns: Namespace, proxy: subprocess.Popen[str]
) -> None:
    netns.redirect(ECHO_PORT, PROXY_PORT)
    result = netns.client("ping", str(ECHO_PORT))

    for rtt in result["rtts"]:
        assert 2 * DELAY <= rtt < 3 * DELAY, result
    assert result["after_eof"] == "", "half-close did not come back as EOF"
    code, log = _stop(proxy)
    assert code == 0, log
    [line] = log.splitlines()
    assert f"-> 127.0.0.1:{ECHO_PORT}: done, 12 B out, 12 B back" in line


def test_without_the_rule_the_echo_is_direct(
    netns: Namespace, proxy: subprocess.Popen[str]
) -> None:
    result = netns.client("ping", str(ECHO_PORT))

    assert max(result["rtts"]) < DELAY / 4, result
    code, log = _stop(proxy)
    assert code == 0 and log == "", log


def test_a_megabyte_comes_back_intact_and_pipelined(
    netns: Namespace, proxy: subprocess.Popen[str]
) -> None:
    netns.redirect(ECHO_PORT, PROXY_PORT)
    size = 1 << 20
    result = netns.client("bulk", str(ECHO_PORT), str(size))

    assert result["intact"], f"echoed {result['size']} of {size} bytes, or different ones"
    # Each direction reads at most 64 KiB at a time, so at least 16 chunks per direction;
    # delaying them one after another would take 32 * DELAY or more.
    assert 2 * DELAY <= result["seconds"] < 5 * DELAY, result


def test_a_connection_that_was_not_redirected_is_closed(
    netns: Namespace, proxy: subprocess.Popen[str]
) -> None:
    netns.redirect(ECHO_PORT, PROXY_PORT)
    result = netns.client("probe", str(PROXY_PORT))

    assert result == {"seconds": pytest.approx(0, abs=DELAY / 2), "data": ""}
    code, log = _stop(proxy)
    assert code == 0, log
    assert "addressed to the proxy itself" in log
