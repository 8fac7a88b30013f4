"""A throwaway PostgreSQL cluster listening on a test bridge: faults (restarts, dead clients)
that never touch the shared server on 127.0.0.1."""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cluster", "postgresql_bin"]


def postgresql_bin() -> Path | None:
    """The newest Debian PostgreSQL binaries (initdb, pg_ctl), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """initdb'd into a temp folder owned by ``postgres``; trust for the bridge's subnet."""

    folder: Path
    address: str
    port: int

    @classmethod
    def create(cls, address: str) -> Cluster:
        binaries = postgresql_bin()
        if binaries is None:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
        folder = Path(tempfile.mkdtemp(prefix="sweep-hosts-pg-"))
        cluster = cls(folder, address, _free_port(address))
        try:
            shutil.chown(folder, "postgres", "postgres")
            cluster._as_postgres(
                str(binaries / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres"
            )
            subnet = address.rsplit(".", 1)[0] + ".0/24"
            with (cluster.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {subnet} trust\n")
            with (cluster.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"listen_addresses = '{address}'\nport = {cluster.port}\n"
                    f"unix_socket_directories = '{folder}'\nmax_connections = 40\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "shared_buffers = 16MB\n"
                )
            cluster.start()
            cluster.psql("CREATE DATABASE sweep")
        except BaseException:
            cluster.remove()
            raise
        return cluster

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.address}:{self.port}/sweep"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, text=True, cwd=self.folder)

    def _pg_ctl(self, *args: str) -> None:
        binaries = postgresql_bin()
        assert binaries is not None
        self._as_postgres(str(binaries / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)

    def start(self) -> None:
        self._pg_ctl("-l", str(self.folder / "server.log"), "start")

    def restart(self) -> None:
        """Down and up again; every session ends (the clients see their connection drop)."""
        self._pg_ctl("-m", "fast", "-l", str(self.folder / "server.log"), "restart")

    def psql(self, sql: str) -> str:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-h", self.address, "-p", str(self.port),
             "-U", "postgres", "-d", "postgres", "-tAc", sql],
            check=True, capture_output=True, text=True, cwd=self.folder,
        )
        return done.stdout.strip()

    def recreate_database(self) -> None:
        """A fresh, empty ``sweep`` database (each scenario starts from nothing)."""
        self.psql("DROP DATABASE IF EXISTS sweep WITH (FORCE)")
        self.psql("CREATE DATABASE sweep")

    def remove(self) -> None:
        """Stop at once and delete the folder; never raises."""
        binaries = postgresql_bin()
        if binaries is not None and (self.data / "postmaster.pid").exists():
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(binaries / "pg_ctl"), "-D",
                 str(self.data), "-m", "immediate", "-w", "-t", "30", "stop"],
                capture_output=True, cwd=self.folder,
            )
            deadline = time.monotonic() + 10
            while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)
