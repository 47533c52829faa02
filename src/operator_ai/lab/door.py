"""The agent's narrow door to its lab's supervisord.

supervisord's own socket gives its whole API to whoever can connect: shutting it down,
reloading its config, adding programs, signalling anything. So that socket lives in the
lab's root-only ``private/`` directory, and the lab user (the nodes, the agent's sandbox)
gets this door instead: a small proxy, run by root beside supervisord, listening on the
socket that ``supervisord.conf`` names for ``supervisorctl``. It lets through exactly what
``supervisorctl status``, ``start``, ``stop``, ``restart`` and ``tail`` (``-f`` too) need,
for this lab's own programs, and answers anything else with an XML-RPC fault that says so.
Before it lets a start through, it checks that the program's launch script is root's and
that only root can change it.

The door decides on the call it parsed, and forwards that call, serialized anew: never the
client's bytes, which another XML parser (supervisord's) could read differently. Requests
are read with hard limits (header lines, body size, no DTD, log reads of at most 1 MiB,
connections at once, idle time), so a hostile client costs it little; refusals are logged,
each cut short, and the log stops growing at LOG_CAP.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import xmlrpc.client
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from operator_ai.lab.safefs import check_launcher
from operator_ai.lab.state import door_socket, supervisor_socket
from operator_ai.lab.supervisor import UnixConnection

MAX_LINE = 8 * 1024
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 30.0
MAX_READ = 1024 * 1024
"""The most of a log one call may ask for."""
LOG_CAP = 4 * 1024 * 1024
DENIED = 403
"""The fault code of a refused call (supervisor's own codes stay below 100)."""
BAD_NAME = 10
NOT_EXECUTABLE = 21
"""supervisor's own fault codes, which supervisorctl turns into "no such process" and "file
is not executable" (it prints no other reason for a failed start; the door's log has it)."""

ANY_NAME = frozenset({
    "supervisor.getVersion", "supervisor.getAPIVersion", "supervisor.getSupervisorVersion",
    "supervisor.getIdentification", "supervisor.getState", "supervisor.getAllProcessInfo",
    "supervisor.startAllProcesses", "supervisor.stopAllProcesses",
})  # fmt: skip
"""Calls that take no program name (every program of this supervisord is the lab's)."""
NAMED = frozenset({
    "supervisor.getProcessInfo", "supervisor.startProcess", "supervisor.stopProcess",
    "supervisor.startProcessGroup", "supervisor.stopProcessGroup",
    "supervisor.readProcessStdoutLog", "supervisor.readProcessStderrLog",
    "supervisor.tailProcessStdoutLog", "supervisor.tailProcessStderrLog",
})  # fmt: skip
"""Calls whose first parameter names a program (or ``group:name``, ``group:*``)."""
READS = frozenset({
    "supervisor.readProcessStdoutLog", "supervisor.readProcessStderrLog",
    "supervisor.tailProcessStdoutLog", "supervisor.tailProcessStderrLog",
})  # fmt: skip
"""Calls that take (name, offset, length) and read a log."""
STARTS = frozenset({
    "supervisor.startProcess", "supervisor.startProcessGroup", "supervisor.startAllProcesses",
})  # fmt: skip
LOGTAIL = re.compile(r"^/logtail/([A-Za-z0-9_.-]+)(?:/(stdout|stderr))?$")


class Refused(Exception):
    """A request the door does not let through; the message says why."""

    def __init__(self, message: str, code: int = DENIED) -> None:
        super().__init__(message)
        self.code = code


class Door:
    """The rules: which programs are this lab's, and where their launch scripts are."""

    def __init__(self, lab_dir: Path, programs: Iterable[str]) -> None:
        self.lab_dir = lab_dir
        self.programs = frozenset(programs)
        self.real = supervisor_socket(lab_dir)

    def check_call(self, method: str, params: tuple[Any, ...]) -> None:
        """Raise :class:`Refused` unless ``method(*params)`` may go through."""
        allowed = "status, start, stop, restart and tail of " + ", ".join(sorted(self.programs))
        if method in ANY_NAME:
            named = sorted(self.programs)
        elif method in NAMED and params and isinstance(params[0], str):
            named = self.names(params[0])
        else:
            raise Refused(f"{method} is not allowed through the lab's door (allowed: {allowed})")
        if method in READS:
            _check_read(params)
        if method in STARTS:
            for name in named:
                if problem := check_launcher(self.lab_dir / "run" / f"{name}.sh"):
                    raise Refused(f"refusing to start {name}: {problem}", NOT_EXECUTABLE)

    def names(self, spec: str) -> list[str]:
        """The programs ``spec`` names (``name``, ``group:name`` or ``group:*``)."""
        parts = [p for p in spec.split(":") if p != "*"]
        if not parts or any(p not in self.programs for p in parts):
            raise Refused(f"{spec!r} is not a program of this lab", BAD_NAME)
        return parts

    def check_logtail(self, path: str) -> None:
        match = LOGTAIL.match(path)
        if match is None or match.group(1) not in self.programs:
            raise Refused(f"GET {path} is not allowed through the lab's door")


def _check_read(params: tuple[Any, ...]) -> None:
    """A log read of at most MAX_READ: the last N bytes (offset -N, length 0) or N bytes."""
    offset, length = (*params[1:3], None, None)[:2]
    if not (isinstance(offset, int) and isinstance(length, int)):
        raise Refused("a log read takes a name, an offset and a length", 2)
    tail = offset < 0 and length == 0 and -offset <= MAX_READ
    if not (tail or 0 < length <= MAX_READ):
        raise Refused(f"a log read may ask for at most {MAX_READ} bytes")


def parse_call(body: bytes) -> tuple[str, tuple[Any, ...]]:
    """The method and parameters of an XML-RPC call; a DTD (entities) is refused."""
    if b"<!" in body:
        raise Refused("a DTD or entity in an XML-RPC call")
    try:
        params, method = xmlrpc.client.loads(body)
    except Exception as exc:  # expat's errors, and anything else malformed
        raise Refused(f"not an XML-RPC call: {exc}") from exc
    if not method:
        raise Refused("an XML-RPC call with no method name")
    return method, params


def _read_request(rfile: io.BufferedIOBase) -> tuple[str, str, bytes, bytes] | None:
    """One HTTP request: (method, path, head, body), ``head`` being the request line and
    headers as received; None at the end of the connection."""
    line = rfile.readline(MAX_LINE + 1)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or len(line) > MAX_LINE:
        raise Refused("malformed request line")
    length, head = 0, line
    for _ in range(MAX_HEADERS):
        header = rfile.readline(MAX_LINE + 1)
        head += header
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            if not value.strip().isdigit() or int(value) > MAX_BODY:
                raise Refused(f"a body over {MAX_BODY} bytes")
            length = int(value)
    else:
        raise Refused("too many headers")
    body = rfile.read(length)
    if len(body) != length:
        return None
    return parts[0], parts[1], head, body


def _response(wfile: io.BufferedIOBase, status: int, reason: str, body: bytes, close: bool) -> None:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    wfile.write(head.encode("latin-1") + body)
    wfile.flush()


def _fault(refused: Refused) -> bytes:
    fault = xmlrpc.client.Fault(refused.code, str(refused))
    return xmlrpc.client.dumps(fault, methodresponse=True).encode()


class _Handler(socketserver.StreamRequestHandler):
    timeout = IDLE_TIMEOUT
    server: _Server

    def handle(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            return  # too many connections at once: close this one
        try:
            while self._one():
                pass
        except (Refused, OSError, ValueError) as exc:
            self.server.log(f"dropped a connection: {exc}")
        finally:
            self.server.slots.release()

    def _one(self) -> bool:
        """Answer one request; False when the connection should close."""
        door = self.server.door
        try:
            request = _read_request(self.rfile)
        except Refused as exc:
            _response(self.wfile, 400, "Bad Request", str(exc).encode(), close=True)
            return False
        if request is None:
            return False
        method, path, head, body = request
        try:
            if method == "GET":
                door.check_logtail(path)
                self._stream(head)
                return False
            if method != "POST" or path != "/RPC2":
                raise Refused(f"{method} {path} is not allowed through the lab's door")
            call, params = parse_call(body)
            door.check_call(call, params)
            body = xmlrpc.client.dumps(params, call).encode()  # what was checked, exactly
        except Refused as exc:
            self.server.log(f"refused: {exc}")
            _response(self.wfile, 200, "OK", _fault(exc), close=False)
            return True
        connection = UnixConnection(str(door.real), timeout=60)
        try:
            connection.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
            answer = connection.getresponse()
            _response(self.wfile, answer.status, answer.reason, answer.read(), close=False)
        finally:
            connection.close()
        return True

    def _stream(self, head: bytes) -> None:
        """``supervisorctl tail -f``: relay supervisord's never-ending answer as it comes."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as real:
            real.connect(str(self.server.door.real))
            real.sendall(head)
            client = self.request
            client.settimeout(None)
            while True:  # until either side hangs up: a client gone frees its slot at once
                readable, _, _ = select.select([real, client], [], [])
                if client in readable and not client.recv(4096):
                    return
                if real in readable:
                    chunk = real.recv(65536)
                    if not chunk:
                        return
                    client.sendall(chunk)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, door: Door) -> None:
        self.door = door
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._log_lock = threading.Lock()
        super().__init__(str(door_socket(door.lab_dir)), _Handler)

    def log(self, message: str) -> None:
        """One line on stdout (the door's log), cut to 300 characters; nothing once the log
        holds LOG_CAP bytes, so refusals cannot fill root's disk."""
        with self._log_lock, contextlib.suppress(OSError):
            if os.fstat(sys.stdout.fileno()).st_size < LOG_CAP:
                print(repr(message[:300])[1:-1], flush=True)


def serve(door: Door, owner: tuple[int, int] | None) -> None:
    """Listen on the lab's door socket (0600, ``owner``'s) until SIGTERM."""
    path = door_socket(door.lab_dir)
    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        server = _Server(door)
    finally:
        os.umask(old)
    if owner is not None:
        os.chown(path, *owner)

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"door open on {path} for {', '.join(sorted(door.programs))}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", type=Path, required=True, help="the lab directory")
    parser.add_argument("--programs", required=True, help="the lab's programs, comma-separated")
    parser.add_argument("--owner", help="UID:GID who may connect (besides root)")
    args = parser.parse_args(argv)
    owner = None
    if args.owner:
        uid, _, gid = args.owner.partition(":")
        owner = (int(uid), int(gid))
    serve(Door(args.lab, args.programs.split(",")), owner)


if __name__ == "__main__":
    main(sys.argv[1:])
