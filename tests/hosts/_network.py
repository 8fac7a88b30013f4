"""Hosts of our own for fault tests: network namespaces on a bridge, cut and restored by
iptables inside each namespace, so no rule ever touches the machine's own traffic.

The bridge and every host address are in a /24 of 10.213.0.0/16 that no interface uses yet;
the database cluster listens on the bridge's address. Needs root, ``ip`` and ``iptables``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Host", "Network", "missing_tools"]


def missing_tools() -> str | None:
    """Why this machine cannot make hosts (not root, a missing tool), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs it)"
    return None


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@dataclass
class Host:
    """A network namespace with one address on the bridge."""

    name: str
    interface: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Drop every packet in and out: a silent network (no reset, no unreachable)."""
        for chain, direction in (("INPUT", "-i"), ("OUTPUT", "-o")):
            _run(*self.command(["iptables", "-I", chain, direction, self.interface, "-j", "DROP"]))

    def restore(self) -> None:
        _run(*self.command(["iptables", "-F"]))


@dataclass
class Network:
    """A bridge in the machine's namespace, and hosts attached to it."""

    subnet: int  # the third octet of 10.213.N.0/24
    hosts: list[Host] = field(default_factory=list)
    _made: int = 0

    @classmethod
    def create(cls) -> Network:
        """A bridge on a subnet no interface uses (its gateway: `address`)."""
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        start = os.getpid() % 200
        for offset in range(200):
            subnet = 20 + (start + offset) % 200
            if f"10.213.{subnet}." not in used:
                break
        else:
            raise RuntimeError("no free 10.213.N.0/24 subnet")
        network = cls(subnet)
        _run("ip", "link", "add", network.bridge, "type", "bridge")
        try:
            _run("ip", "addr", "add", f"{network.address}/24", "dev", network.bridge)
            _run("ip", "link", "set", network.bridge, "up")
        except BaseException:
            network.remove()
            raise
        return network

    @property
    def bridge(self) -> str:
        return f"swbr{self.subnet}"

    @property
    def address(self) -> str:
        return f"10.213.{self.subnet}.1"

    def add_host(self) -> Host:
        """A new namespace joined to the bridge by a veth pair."""
        self._made += 1
        index = self._made
        host = Host(f"sweep{self.subnet}h{index}", f"swv{self.subnet}h{index}",
                    f"10.213.{self.subnet}.{10 + index}")
        peer = f"swp{self.subnet}h{index}"
        self.hosts.append(host)  # before it exists: `remove` cleans up whatever was made
        _run("ip", "netns", "add", host.name)
        _run("ip", "link", "add", host.interface, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", host.interface, "netns", host.name)
        _run("ip", "link", "set", peer, "master", self.bridge, "up")
        _run(*host.command(["ip", "addr", "add", f"{host.address}/24", "dev", host.interface]))
        _run(*host.command(["ip", "link", "set", host.interface, "up"]))
        _run(*host.command(["ip", "link", "set", "lo", "up"]))
        return host

    def remove_hosts(self) -> None:
        """Delete every host, its veth pair with it; never raises."""
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
        self.hosts.clear()

    def remove(self) -> None:
        """Delete every host and the bridge; never raises."""
        self.remove_hosts()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
