"""supervisord for lab nodes: its config, its start, and a client over its unix socket.

One program per node with ``autorestart=false``: a killed node stays down until someone
starts it, which is what makes a fault last and `supervisorctl` part of the agent's tools.
"""

from __future__ import annotations

import http.client
import signal
import socket
import sys
import time
import xmlrpc.client
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from operator_ai.core import RUNNING, NodeStatus
from operator_ai.errors import LabError
from operator_ai.lab import procs
from operator_ai.lab.state import PRIVATE, door_socket, supervisor_socket


def render_config(lab_dir: Path, prefix: str, programs: Sequence[str]) -> str:
    """The supervisord.conf of a lab. supervisord's own socket is root's, in ``private/``;
    ``supervisorctl`` is pointed at the lab's door (`lab/door.py`), which the lab user may
    use. Every process starts in the lab directory, not in whatever directory `lab up` ran."""
    sections = [
        f"[unix_http_server]\nfile={supervisor_socket(lab_dir)}\nchmod=0700\n",
        f"[supervisord]\nlogfile={lab_dir}/logs/supervisord.log\n"
        f"pidfile={lab_dir}/{PRIVATE}/supervisord.pid\nidentifier={prefix}\nnodaemon=true\n"
        f"childlogdir={lab_dir}/logs\ndirectory={lab_dir}\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl=unix://{door_socket(lab_dir)}\n",
    ]
    for name in programs:
        sections.append(
            f"[program:{name}]\ncommand=/bin/sh {lab_dir}/run/{name}.sh\ndirectory={lab_dir}\n"
            "autostart=false\nautorestart=false\nstartsecs=1\nstartretries=0\n"
            "stopasgroup=true\nkillasgroup=true\nstopwaitsecs=5\nredirect_stderr=true\n"
            f"stdout_logfile={lab_dir}/logs/{name}.log\n"
            "stdout_logfile_maxbytes=20MB\nstdout_logfile_backups=1\n"
        )
    return "\n".join(sections)


def start(lab_dir: Path, private_mounts: bool, env: dict[str, str]) -> procs.Proc:
    """Start supervisord detached from us; with ``private_mounts`` it gets its own mount
    namespace, so the nodes' tmpfs data dirs exist only for the lab and vanish with it."""
    argv = ["supervisord", "-c", str(lab_dir / "supervisord.conf")]
    if private_mounts:
        argv = ["unshare", "--mount", "--propagation", "private", "--", *argv]
    proc = procs.spawn(argv, lab_dir / "logs" / "supervisord.out", env, cwd=lab_dir)
    client = Supervisor(supervisor_socket(lab_dir))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not proc.alive():
            log = (lab_dir / "logs" / "supervisord.out").read_text(errors="replace")[-500:]
            raise LabError(f"supervisord exited at start: {log.strip()}")
        try:
            if client.call("supervisor.getState")["statename"] == RUNNING:
                return proc
        except LabError:
            pass
        time.sleep(0.05)
    raise LabError("supervisord did not answer on its socket within 15 s")


def start_door(
    lab_dir: Path, programs: Sequence[str], owner: tuple[int, int] | None, env: dict[str, str]
) -> procs.Proc:
    """Start the lab's door to supervisord (`lab/door.py`) and wait until it listens."""
    # The trailing slash is how `lab down` finds it after a crash (`procs.referencing`).
    argv = [sys.executable, "-I", "-m", "operator_ai.lab.door", "--lab", f"{lab_dir}/",
            "--programs", ",".join(programs)]  # fmt: skip
    if owner is not None:
        argv += ["--owner", f"{owner[0]}:{owner[1]}"]
    log = supervisor_socket(lab_dir).with_name("door.log")
    proc = procs.spawn(argv, log, env, cwd=lab_dir)
    client = Supervisor(door_socket(lab_dir))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not proc.alive():
            raise LabError(f"the lab's supervisor door exited at start: {log.read_text()[-500:]}")
        try:
            client.call("supervisor.getState")
            return proc
        except LabError:
            time.sleep(0.05)
    procs.terminate([proc])
    raise LabError("the lab's supervisor door did not answer within 15 s")


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        # Cached where the base class expects it, so that closing the transport closes it.
        self._connection = host, UnixConnection(self._path, self._timeout)
        return self._connection[1]


class Supervisor:
    """The XML-RPC API that supervisorctl itself uses, over the lab's socket."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self._proxy = xmlrpc.client.ServerProxy(
            "http://localhost", transport=_UnixTransport(str(socket_path), timeout)
        )

    def call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._proxy, method)(*args)
        except xmlrpc.client.Fault as exc:
            raise LabError(f"supervisord: {method}{args}: {exc.faultString}") from exc
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
            raise LabError(
                f"supervisord is not answering on {self.socket_path}: {exc}",
                hint="The lab may be down; `operator lab status` tells, `lab up` restarts it.",
            ) from exc
        finally:
            self._proxy("close")()

    def info(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.call("supervisor.getProcessInfo", name))

    # -- NodeControl ---------------------------------------------------------------------

    def status(self, node: str) -> NodeStatus:
        return _status(self.info(node))

    def statuses(self) -> list[NodeStatus]:
        infos = cast(list[dict[str, Any]], self.call("supervisor.getAllProcessInfo"))
        return [_status(info) for info in infos]

    def start(self, node: str) -> None:
        """Start a node and wait until it has stayed up for `startsecs`."""
        if self.status(node).state != RUNNING:
            self.call("supervisor.startProcess", node, True)

    def stop(self, node: str) -> None:
        if self.status(node).state == RUNNING:
            self.call("supervisor.stopProcess", node, True)

    def restart(self, node: str) -> None:
        self.stop(node)
        self.start(node)

    def signal(self, node: str, sig: signal.Signals) -> int:
        status = self.status(node)
        proc = procs.Proc.of(status.pid) if status.state == RUNNING and status.pid else None
        if proc is None:
            raise LabError(
                f"{node} is not running", hint=f"`supervisorctl start {node}` starts it first."
            )
        proc.signal(sig)
        return proc.pid

    def shutdown(self) -> None:
        self.call("supervisor.shutdown")


def _status(info: dict[str, Any]) -> NodeStatus:
    state = str(info["statename"])
    return NodeStatus(str(info["name"]), state, int(info["pid"] or 0) or None)
