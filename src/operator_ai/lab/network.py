"""The lab's network in netns mode: one namespace per node, one for ops, and a bridge.

    host ──veth {prefix}h (x.x.x.1)──┐
                                     │ br0, in namespace {prefix}-br (no address)
    {prefix}-ops   eth0 x.x.x.2 ─────┤
    {prefix}-etcd1 eth0 x.x.x.11 ────┤
    {prefix}-etcd2 eth0 x.x.x.12 ────┘ ...

The host reaches the lab through its own veth into the bridge, so the monitor, the load
generator and the CLI run as ordinary host processes and talk to node addresses directly.
The lab is IPv4 only: IPv6 is off in every lab namespace and on the host's veth, so no
link-local address exists to reach the host by, and the ops fence drops IPv6 as well.
The /24 is private to the lab: it is chosen to overlap no route the host already has, and
every interface and namespace carries the lab's prefix so `down` finds them after a crash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from operator_ai.errors import LabError

IPV6 = Path("/proc/sys/net/ipv6")


def sh(*argv: str, input: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a system tool, turning a failure into a LabError that quotes its stderr."""
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise LabError(
            f"{argv[0]} is not installed", hint="Run `make setup` (as root) to install it."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)} did not finish in {timeout:g} s") from exc
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def namespaces(prefix: str) -> list[str]:
    out = sh("ip", "-j", "netns", "list", check=False).strip()
    names = [entry["name"] for entry in json.loads(out)] if out else []
    return [n for n in names if n.startswith(f"{prefix}-")]


def pick_subnet(prefix: str) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no host route overlaps, stable for a given prefix."""
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all") or "[]")
    taken = [
        ipaddress.ip_network(r["dst"], strict=False)
        for r in routes
        if r.get("dst", "default") != "default"
    ]
    start = int(hashlib.sha256(prefix.encode()).hexdigest()[:4], 16)
    for step in range(2048):
        index = (start + step) % 2048
        net = ipaddress.IPv4Network(f"10.{200 + index // 256}.{index % 256}.0/24")
        if not any(net.overlaps(other) for other in taken):
            return net
    raise LabError("no free /24 left in 10.200.0.0/13 for the lab")


def host_link(prefix: str) -> str:
    return f"{prefix}h"


def create(prefix: str, subnet: ipaddress.IPv4Network, members: Sequence[str]) -> dict[str, str]:
    """Build the bridge, the host link and one namespace per member; return their addresses.

    ``members`` names the namespaces to create besides the bridge's (nodes and `ops`). The
    result maps each member and `host` to its address."""
    hosts = list(subnet.hosts())
    bridge = f"{prefix}-br"
    sh("ip", "netns", "add", bridge)
    _no_ipv6(bridge)
    sh("ip", "-n", bridge, "link", "set", "lo", "up")
    sh("ip", "-n", bridge, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", bridge, "link", "set", "br0", "up")

    link = host_link(prefix)
    addresses = {"host": str(hosts[0])}
    sh("ip", "link", "add", link, "type", "veth", "peer", "name", "host", "netns", bridge)
    if IPV6.exists():
        sh("sysctl", "-qw", f"net.ipv6.conf.{link}.disable_ipv6=1")
    sh("ip", "addr", "add", f"{hosts[0]}/{subnet.prefixlen}", "dev", link)
    sh("ip", "link", "set", link, "up")
    sh("ip", "-n", bridge, "link", "set", "host", "master", "br0", "up")

    for index, member in enumerate(members):
        address = hosts[1] if member == "ops" else hosts[10 + index]
        ns = f"{prefix}-{member}"
        port = f"v-{member}"[:15]
        sh("ip", "netns", "add", ns)
        _no_ipv6(ns)
        sh("ip", "-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", ns)  # fmt: skip
        sh("ip", "-n", bridge, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        addresses[member] = str(address)
    return addresses


def _no_ipv6(netns: str) -> None:
    """Turn IPv6 off in a namespace, for the interfaces it has and those it will get."""
    if IPV6.exists():
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip


def fence(netns: str, host_address: str) -> None:
    """Keep a lab namespace off the host: the host may open connections into the lab, but
    nothing in the lab may open one to the host's address (the agent's sandbox in ops, or a
    node it reconfigured to connect there), and nothing leaves it over IPv6 at all (the lab
    has none; the host's veth might)."""
    nft(netns, f"""table inet operator_fence {{
  chain out {{ type filter hook output priority 0;
    ip daddr {host_address} ct state new drop;
    meta nfproto ipv6 oifname != "lo" drop; }}
}}""")  # fmt: skip


def destroy(prefix: str) -> list[str]:
    """Delete every namespace and host link carrying ``prefix``; return what was removed."""
    removed = []
    for ns in namespaces(prefix):
        sh("ip", "netns", "del", ns, check=False)
        removed.append(f"netns {ns}")
    link = host_link(prefix)
    if sh("ip", "link", "show", link, check=False):
        sh("ip", "link", "del", link, check=False)
        removed.append(f"link {link}")
    return removed


def nft(netns: str, script: str) -> None:
    """Load an nft script inside a namespace."""
    sh("ip", "netns", "exec", netns, "nft", "-f", "-", input=script)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
