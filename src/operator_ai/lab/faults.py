"""The generic faults: real injections with a revert that work on any subject's nodes.

A subject adds its own through ``Subject.faults()``, using the public helpers here
(``kill_node``, ``drop_rules``, ``number``...). The logs of a fault's helpers are root's (in
``private/``), out of the agent's sight: they name the fault. A fault that writes where the
lab user can write does it as the lab user (``LabHandle.as_user``), never as root through a
path the agent could have replaced with a link.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from operator_ai.core import CLUSTER, MODES, NETNS, NODE, Fault, Injection, LabHandle, Node
from operator_ai.errors import FaultUnsupported, LabError, OperatorError, UsageError
from operator_ai.lab import network, procs
from operator_ai.lab.state import CLEAN_ENV, TMPFS_SIZE, private_dir

FILL_FILE = ".operator-fill"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def helpers(injection: Injection) -> list[procs.Proc]:
    """The processes a fault started, each by PID and start time: one that has exited since
    and whose PID another process now has is not among them."""
    found = (procs.Proc.load(v) for v in injection.state.get("helpers", []))
    return [p for p in found if p is not None]


# -- the generic faults -------------------------------------------------------------------


def _pid(lab: LabHandle, target: str) -> int:
    pid = lab.cluster.pid(target)
    if pid is None:
        raise LabError(
            f"{target} is not running", hint=f"`supervisorctl start {target}` starts it first."
        )
    return pid


def kill_node(lab: LabHandle, name: str, timeout: float = 10.0) -> int:
    """SIGKILL a node and wait until its control has seen it die, so that a start right
    after (a revert) is not skipped as "already running"; returns the PID it had."""
    cluster = lab.cluster
    pid = cluster.control.signal(name, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while cluster.pid(name) == pid and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid


def stop_nodes(lab: LabHandle, names: list[str]) -> list[str]:
    """Stop each node through its control; if one cannot be stopped, start the ones already
    stopped again and raise. Returns the names, for ``start_nodes`` on revert."""
    stopped: list[str] = []
    try:
        for name in names:
            lab.cluster.control.stop(name)
            stopped.append(name)
    except LabError:
        start_nodes(lab, stopped)
        raise
    return stopped


def start_nodes(lab: LabHandle, names: list[str]) -> None:
    for name in names:
        lab.cluster.control.start(name)


def node_among(lab: LabHandle, target: str, nodes: list[Node], kind: str) -> Node:
    """The node ``target`` names, which must be one of ``nodes`` (a subject's servers, say);
    a usage error naming them otherwise."""
    node = lab.cluster.node(target)
    if node not in nodes:
        names = ", ".join(n.name for n in nodes)
        raise UsageError(f"{target} is not {kind}", hint=f"Target one of {names}.")
    return node


def leader_node(lab: LabHandle, what: str) -> Node:
    """The node that leads now; a lab error naming ``what`` when none does."""
    name = lab.leader()
    if name is None:
        raise LabError(f"{what} now", hint="Try again after a failover.")
    return lab.cluster.node(name)


def undone(what: str, exc: Exception) -> LabError:
    """The error of a subject's fault that failed halfway and undid what it had done."""
    return LabError(
        f"{what}: {type(exc).__name__}: {str(exc).strip()}",
        hint="`operator lab status` shows which node is not answering; heal or reset the lab.",
    )


class Kill:
    name = "kill"
    description = "SIGKILL the node's process; it stays down until someone starts it"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        return {"pid": kill_node(lab, target)}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        lab.cluster.control.start(injection.target)


class Stop:
    name = "stop"
    description = "stop the node through supervisord; it stays down until started again"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        lab.cluster.control.stop(target)
        return {}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        lab.cluster.control.start(injection.target)


class Pause:
    name = "pause"
    description = "SIGSTOP the node's whole process tree (hung, not dead); revert resumes it"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = MODES
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        return {"procs": procs.signal_tree(_pid(lab, target), signal.SIGSTOP)}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        for value in injection.state.get("procs", []):
            if proc := procs.Proc.load(value):
                proc.signal(signal.SIGCONT)


def _netns(lab: LabHandle, target: str) -> str:
    cluster = lab.cluster
    netns = cluster.node(target).netns
    if cluster.mode != NETNS or netns is None:
        raise FaultUnsupported("this fault needs a netns-mode lab")
    return netns


def _nft(netns: str, script: str, fault: str) -> None:
    try:
        network.nft(netns, script)
    except LabError as exc:
        raise FaultUnsupported(
            f"the kernel refused the nft rules for {fault}: {exc}",
            hint="This kernel lacks an nftables feature the fault needs (see the message).",
        ) from exc


def drop_table(netns: str, table: str) -> None:
    network.sh("ip", "netns", "exec", netns, "nft", "delete", "table", "inet", table, check=False)


def peers(lab: LabHandle, target: str) -> list[Node]:
    """The nodes on other hosts than ``target`` (not the ones that share its namespace)."""
    address = lab.cluster.node(target).address
    return [n for n in lab.cluster.nodes if n.address != address]


def _addresses(nodes: list[Node]) -> str:
    return ", ".join(sorted({n.address for n in nodes}))


def _unused(netns: str, table: str) -> None:
    """Refuse a table a fault already holds in the namespace: nodes on one host share it (a
    sentinel beside its Redis), and reverting either fault would drop the other's rules."""
    listed = network.sh("ip", "netns", "exec", netns, "nft", "list", "tables", check=False)
    if f"table inet {table}" in listed.splitlines():
        raise UsageError(
            f"{netns} already has {table}: a fault on this node, or on one that shares its "
            "namespace, is active",
            hint="Revert it first (`operator chaos list` shows it).",
        )


def drop_rules(
    lab: LabHandle, target: str, fault: str, inbound: str, outbound: str
) -> dict[str, Any]:
    """Load a filter table in the node's namespace; revert deletes the table."""
    netns, table = _netns(lab, target), f"operator_{fault}"
    _unused(netns, table)
    _nft(netns, f"""table inet {table} {{
  chain in {{ type filter hook input priority -10; {inbound} }}
  chain out {{ type filter hook output priority -10; {outbound} }}
}}""", fault)  # fmt: skip
    return {"netns": netns, "table": table}


class Partition:
    name = "partition"
    description = "drop all traffic between the node and its peers (host and ops still reach it)"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        others = _addresses(peers(lab, target))
        return drop_rules(
            lab,
            target,
            self.name,
            f"ip saddr {{ {others} }} drop;",
            f"ip daddr {{ {others} }} drop;",
        )

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        drop_table(injection.state["netns"], injection.state["table"])


class Loss:
    name = "loss"
    description = "drop a percentage of the node's packets, both ways"
    params: Mapping[str, tuple[str, str]] = {"percent": ("30", "share of packets dropped")}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        percent = int(number(params, "percent", 0, 100))
        # nft compares a number in 0..99, so 100% is a plain drop.
        rule = "drop;" if percent == 100 else f"numgen random mod 100 < {percent} drop;"
        return drop_rules(
            lab, target, self.name, f'iifname "eth0" {rule}', f'oifname "eth0" {rule}'
        )

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        drop_table(injection.state["netns"], injection.state["table"])


PROXY_PORT = 15999


def delay_traffic(
    lab: LabHandle, target: str, fault: str, delay: int, *, inbound: bool, toward: list[Node]
) -> dict[str, Any]:
    """Hold a node's TCP traffic back by ``delay`` ms each way through the delay proxy: the
    connections it accepts (``inbound``) and the ones it dials to the nodes ``toward``.
    Revert with ``undelay``."""
    netns, table = _netns(lab, target), "operator_delay"
    _unused(netns, table)
    cluster = lab.cluster
    ports = ", ".join(str(p) for p in sorted(set(cluster.node(target).ports.values())))
    their_ports = ", ".join(str(p) for p in sorted({p for n in toward for p in n.ports.values()}))
    if cluster.user is None:
        raise FaultUnsupported(f"{fault} needs to know the account the nodes run as")
    uid = pwd.getpwnam(cluster.user).pw_uid
    proxy = procs.spawn(
        ["ip", "netns", "exec", netns, sys.executable, "-I", "-m", "operator_ai.lab.delayproxy",
         "--port", str(PROXY_PORT), "--delay-ms", str(delay)],
        helper_log(lab, f"{fault}-{target}"), env=CLEAN_ENV, cwd=private_dir(lab.path),
    )  # fmt: skip
    accepted = f"""
  chain pre {{ type nat hook prerouting priority -100;
    iifname "eth0" tcp dport {{ {ports} }} redirect to :{PROXY_PORT}; }}"""
    try:
        _wait_listening(netns, PROXY_PORT)
        _nft(netns, f"""table inet {table} {{{accepted if inbound else ""}
  chain out {{ type nat hook output priority -100;
    meta skuid {uid} ip daddr {{ {_addresses(toward)} }} tcp dport {{ {their_ports} }} \
redirect to :{PROXY_PORT}; }}
}}""", fault)  # fmt: skip
    except OperatorError:
        procs.terminate([proxy])
        raise
    # Established connections bypass new NAT rules: cut them so they reconnect through us.
    _cut_connections(netns, f"{ports}, {their_ports}" if inbound else their_ports)
    return {"netns": netns, "table": table, "helpers": [proxy]}


def undelay(injection: Injection) -> None:
    drop_table(injection.state["netns"], injection.state["table"])
    procs.terminate(helpers(injection), grace=2.0)


class Delay:
    name = "delay"
    description = "add latency to the node's TCP traffic, each way (a proxy; no netem here)"
    params: Mapping[str, tuple[str, str]] = {"ms": ("200", "milliseconds added each way")}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        delay = int(number(params, "ms", 1, 60_000))
        return delay_traffic(lab, target, self.name, delay, inbound=True, toward=peers(lab, target))

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        undelay(injection)


def _wait_listening(netns: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = network.sh("ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}")
        if out.strip():
            return
        time.sleep(0.05)
    raise LabError(f"the delay proxy did not listen on port {port} within {timeout:.0f} s")


def _cut_connections(netns: str, ports: str) -> None:
    for port in ports.split(", "):
        match = f"( sport = :{port} or dport = :{port} )"
        network.sh("ip", "netns", "exec", netns, "ss", "-K", match, check=False)


class DiskFull:
    name = "disk_full"
    description = "shrink the node's data tmpfs to what it uses and fill the rest"
    params: Mapping[str, tuple[str, str]] = {}
    modes: tuple[str, ...] = (NETNS,)
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        data = str(lab.path / "data" / target)
        used = int(lab.in_mounts("df", "-B1", "--output=used", data).split()[-1])
        _remount(lab, data, f"size={used + 4 * 1024 * 1024}")
        # `dd` stops at ENOSPC with an error; the full disk is the point. As the lab user,
        # like everything written in its data dir.
        with contextlib.suppress(LabError):
            lab.as_user("dd", "if=/dev/zero", f"of={data}/{FILL_FILE}", "bs=1M", "count=1024")
        return {"data": data}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        data = injection.state["data"]
        lab.as_user("rm", "-f", f"{data}/{FILL_FILE}")
        _remount(lab, data, f"size={TMPFS_SIZE}")


def _remount(lab: LabHandle, data: str, options: str) -> None:
    """Remount a node's data tmpfs; the path must still be the tmpfs itself (a data dir is a
    mount point, which the lab user cannot rename or replace with a link)."""
    lab.in_mounts("mountpoint", "-q", data)
    lab.in_mounts("mount", "-o", f"remount,{options}", "--target", data)


def is_go_binary(path: str) -> bool:
    """Go programs read the clock through the vDSO with their own syscalls, not libc, so
    libfaketime cannot skew them. Go stamps its build info behind this magic."""
    try:
        with open(path, "rb") as binary:
            return b"\xff Go buildinf:" in binary.read()
    except OSError:
        return False


class ClockSkew:
    name = "clock_skew"
    description = "restart the node with its clock shifted (libfaketime; not for Go binaries)"
    params: Mapping[str, tuple[str, str]] = {"seconds": ("30", "offset, may be negative")}
    modes: tuple[str, ...] = MODES
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        seconds = int(number(params, "seconds", -(10**7), 10**7))
        program = lab.command(target)[0]
        binary = shutil.which(program) or program
        if is_go_binary(binary):
            raise FaultUnsupported(
                f"{target} runs {binary}, a Go binary: Go reads the clock without libc, so "
                "libfaketime cannot skew it, and skewing the host clock would break every node",
                hint="Use clock_skew on nodes that are not Go programs (the rate limiter's).",
            )
        if not Path(FAKETIME_LIB).exists():
            raise FaultUnsupported(f"{FAKETIME_LIB} is missing", hint="apt-get install faketime")
        lab.relaunch(target, {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": f"{seconds:+d}s"})
        return {}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        lab.relaunch(injection.target)


class CpuStress:
    name = "cpu_stress"
    description = "load the CPUs with stress-ng (bounded by its own timeout)"
    params: Mapping[str, tuple[str, str]] = {
        "workers": ("1", "CPU workers"),
        "load": ("100", "percent load per worker"),
        "timeout": ("300", "seconds before stress-ng stops by itself"),
    }
    modes: tuple[str, ...] = MODES
    target = CLUSTER

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        workers = int(number(params, "workers", 1, os.cpu_count() or 1))
        load = int(number(params, "load", 1, 100))
        timeout = int(number(params, "timeout", 1, 3600))
        proc = procs.spawn(
            ["stress-ng", "--cpu", str(workers), "--cpu-load", str(load),
             "--timeout", f"{timeout}s", "--temp-path", str(private_dir(lab.path)), "--quiet"],
            helper_log(lab, "cpu-stress"), env=CLEAN_ENV, cwd=private_dir(lab.path),
        )  # fmt: skip
        return {"helpers": [proc]}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        for proc in helpers(injection):  # stress-ng may have stopped at its own timeout
            if proc.alive():
                procs.signal_tree(proc.pid, signal.SIGTERM)


LAB_USER, ROOT = "lab", "root"


class Script:
    name = "script"
    description = (
        "run a shell script of your own at a node (its name and paths in NODE, NODE_CONF, "
        "NODE_DATA, NODE_LOG, LAB_DIR), in the lab's mounts; revert runs the revert script"
    )
    params: Mapping[str, tuple[str, str]] = {
        "run": ("", "the bash script that breaks something"),
        "revert": ("", "the bash script that undoes it (none: only a lab reset does)"),
        "user": (
            LAB_USER,
            "lab: as the lab user; root: as root, only on a lab no agent has "
            "worked in (it follows paths the lab user can write), with no revert",
        ),
    }
    modes: tuple[str, ...] = MODES
    target = NODE

    def inject(self, lab: LabHandle, target: str, params: dict[str, str]) -> dict[str, Any]:
        if not params["run"].strip():
            raise UsageError("the script fault needs --param run=SCRIPT")
        if params["user"] not in (LAB_USER, ROOT):
            raise UsageError(f"--param user must be {LAB_USER} or {ROOT}, not {params['user']!r}")
        if params["user"] == ROOT and params["revert"].strip():
            raise UsageError("a root script takes no revert script: a lab reset undoes it")
        _script(lab, target, params["run"], params["user"])
        return {}

    def revert(self, lab: LabHandle, injection: Injection) -> None:
        script = injection.params.get("revert", "")
        user = injection.params.get("user", LAB_USER)
        if not script.strip() or user == ROOT:
            raise LabError(
                f"script injection {injection.id} has no revert script"
                + (" (root's never have one: an agent may have worked in the lab since)"
                   if user == ROOT else ""),
                hint="Reset the lab (`operator lab reset`) to undo it.",
            )  # fmt: skip
        _script(lab, injection.target, script, user)


def _script(lab: LabHandle, node: str, script: str, user: str) -> str:
    """Run ``script`` in the lab's mounts as the lab user (or root), with the node's name and
    paths in its environment. Root's scripts follow paths the lab user can write: run them
    only on a lab no agent has worked in (the eval harness resets the lab for one)."""
    conf = sorted((lab.path / "conf").glob(f"{node}.*"))
    env = {**CLEAN_ENV, "NODE": node, "LAB_DIR": str(lab.path),
           "NODE_CONF": str(conf[0]) if conf else "", "NODE_DATA": str(lab.path / "data" / node),
           "NODE_LOG": str(lab.path / "logs" / f"{node}.log")}  # fmt: skip
    argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-euc", script]
    if user == ROOT:
        return lab.in_mounts(*argv)
    return lab.as_user(*argv)


GENERIC: dict[str, Fault] = {
    f.name: f
    for f in (
        Kill(),
        Stop(),
        Pause(),
        Partition(),
        Loss(),
        Delay(),
        DiskFull(),
        ClockSkew(),
        CpuStress(),
        Script(),
    )
}


PARAMS = "`operator chaos list` shows each fault's parameters and their defaults."


def helper_log(lab: LabHandle, name: str) -> Path:
    """Where a fault's helper process writes: root's, since it names the fault."""
    return private_dir(lab.path) / f"{name}.log"


def number(params: dict[str, str], name: str, low: float, high: float) -> float:
    try:
        value = float(params[name])
    except ValueError:
        raise UsageError(f"--param {name}={params[name]} is not a number", hint=PARAMS) from None
    if not low <= value <= high:
        raise UsageError(f"--param {name} must be between {low:g} and {high:g}", hint=PARAMS)
    return value
