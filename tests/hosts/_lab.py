"""What a multi-host test works with: the network, the cluster, the processes it started."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from _cluster import Cluster
from _network import Host, Network

__all__ = ["Lab"]


@dataclass
class Lab:
    """The network, the cluster on its bridge, and the processes a test starts on its hosts."""

    network: Network
    cluster: Cluster
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def host(self) -> Host:
        return self.network.add_host()

    def started(self, process: subprocess.Popen[str]) -> subprocess.Popen[str]:
        self.processes.append(process)
        return process
