"""Fixtures of the multi-host fault suite: one bridge and one throwaway PostgreSQL cluster per
module, fresh hosts and a fresh database per test, all removed even when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from _cluster import Cluster, postgresql_bin
from _lab import Lab
from _network import Network, missing_tools


@pytest.fixture(scope="module")
def _lab_module() -> Iterator[tuple[Network, Cluster]]:
    reason = missing_tools() or (None if postgresql_bin() else "no PostgreSQL binaries")
    if reason is not None:
        if "CI" in os.environ:
            pytest.fail(f"{reason} (CI is set, so the multi-host suite must run)", pytrace=False)
        pytest.skip(reason)
    network = Network.create()
    try:
        cluster = Cluster.create(network.address)
        try:
            yield network, cluster
        finally:
            cluster.remove()
    finally:
        network.remove()


@pytest.fixture
def lab(_lab_module: tuple[Network, Cluster]) -> Iterator[Lab]:
    network, cluster = _lab_module
    cluster.recreate_database()
    made = Lab(network, cluster)
    try:
        yield made
    finally:
        for process in made.processes:  # never leave a process behind, whatever failed
            if process.poll() is None:
                process.kill()
                process.communicate()
        network.remove_hosts()
