"""PostgreSQL for the scale section: a throwaway cluster of its own, and a connection counter.

`own_cluster` starts a PostgreSQL cluster of the machine's PostgreSQL in /tmp (initdb, its own
port, `max_connections` as asked) as the postgres user and stops it afterwards, so a shared
server is neither reconfigured nor crowded. `ConnectionSampler` polls `pg_stat_activity` for the
peak number of connections while a run goes on.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from sqlalchemy.pool import NullPool

from benchmarks._common import free_port

__all__ = ["OWN_CLUSTER", "ConnectionSampler", "own_cluster", "server_max_connections"]

_PG_BIN = Path("/usr/lib/postgresql")


class ConnectionSampler:
    """Polls pg_stat_activity every 20 ms on one connection of its own (not counted)."""

    def __init__(self, admin_url: str, database: str) -> None:
        self._engine = sqlalchemy.create_engine(admin_url, poolclass=NullPool)
        self._database = database
        self._stop = threading.Event()
        self.peak_database = 0
        self.peak_server = 0
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()

    def _poll(self) -> None:
        query = sqlalchemy.text(
            "SELECT count(*) FILTER (WHERE datname = :db), "
            "count(*) FILTER (WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"
            " FROM pg_stat_activity"
        )
        with self._engine.connect() as connection:
            while not self._stop.is_set():
                row = connection.execute(query, {"db": self._database}).one()
                connection.rollback()  # a fresh snapshot of the statistics each time
                self.peak_database = max(self.peak_database, int(row[0]))
                self.peak_server = max(self.peak_server, int(row[1]))
                self._stop.wait(0.02)


def server_max_connections(admin_url: str) -> int:
    """The server's `max_connections` setting."""
    engine = sqlalchemy.create_engine(admin_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sqlalchemy.text("SHOW max_connections")).scalar_one())
    finally:
        engine.dispose()


OWN_CLUSTER = (
    "a throwaway PostgreSQL cluster of the machine's PostgreSQL (initdb in /tmp, its own port,"
    " `max_connections = 100`)"
)


@contextlib.contextmanager
def own_cluster(max_connections: int = 100) -> Iterator[str]:
    """A throwaway PostgreSQL cluster in /tmp on a free port, run as the postgres user."""
    versions = sorted(_PG_BIN.iterdir()) if _PG_BIN.is_dir() else []
    if not versions:
        raise RuntimeError(f"no PostgreSQL binaries under {_PG_BIN}")
    bin_dir = versions[-1] / "bin"
    folder = Path(tempfile.mkdtemp(prefix="sweep-scale-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    port = free_port()

    def as_postgres(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                       stdout=subprocess.DEVNULL)

    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
        f"-c max_connections={max_connections}"
    )
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
                str(folder / "log"), "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
