"""A real PgBouncer in transaction pooling mode in front of a PostgreSQL database.

Debian's `pgbouncer` package (installed with apt-get when missing and we are root). Used by the
scale benchmark, where 64 workers at 2 connections each exceed `max_connections = 100` unless a
pooler sits in front (docs/deployment.md), and by the test suite (tests/_pgbouncer.py), whose
server pool is smaller than its clients so that anything relying on session state breaks.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from benchmarks._common import free_port

__all__ = ["PgBouncerMissing", "binary", "pgbouncer_in_front_of"]


class PgBouncerMissing(RuntimeError):
    """The `pgbouncer` binary is not installed and could not be."""


def _installed() -> str | None:
    if found := shutil.which("pgbouncer"):
        return found
    return "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None


def binary() -> str | None:
    """The pgbouncer binary, installing Debian's package first when root and it is missing."""
    found = _installed()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "pgbouncer"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        found = _installed()
    return found




@contextmanager
def pgbouncer_in_front_of(
    server_url: str, *, pool_size: int, max_client_conn: int = 100, ignore_options: bool = True
) -> Iterator[str]:
    """Start PgBouncer for `server_url`'s database; yields the same URL through PgBouncer.

    `pool_size` is PgBouncer's `default_pool_size`: the server connections it opens for the
    database, however many clients it serves (at most `max_client_conn`). Without
    `ignore_options` it refuses a client's startup ``options``, as PgBouncer does by default.
    """
    found = binary()
    if found is None:
        raise PgBouncerMissing("pgbouncer is not installed (Debian package `pgbouncer`)")
    # Its own folder in /tmp: PgBouncer runs as postgres, who cannot enter pytest's tmp_path.
    folder = Path(tempfile.mkdtemp(prefix="sweep-pgbouncer-"))
    try:
        ignored = "extra_float_digits,options" if ignore_options else "extra_float_digits"
        yield from _run(found, server_url, folder, pool_size, max_client_conn, ignored)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(
    found: str,
    server_url: str,
    folder: Path,
    pool_size: int,
    max_client_conn: int,
    ignored: str,
) -> Iterator[str]:
    url = make_url(server_url)
    port = free_port()
    (folder / "users.txt").write_text(f'"{url.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
{url.database} = host={url.host} port={url.port or 5432} dbname={url.database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
server_reset_query =
ignore_startup_parameters = {ignored}
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
"""
    )
    command = [found, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(folder, "postgres")
        for child in folder.iterdir():
            shutil.chown(child, "postgres")
        command[1:1] = ["-u", "postgres"]
    # Its output goes to a file, never a pipe: PgBouncer logs every login to stderr as well,
    # and a pipe nobody reads fills up (64 KiB, a few hundred logins) and freezes PgBouncer
    # in the middle of a write, with every client's query waiting behind it.
    output_path = folder / "pgbouncer.out"
    with output_path.open("wb") as output_file:
        process = subprocess.Popen(command, stdout=output_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = folder / "pgbouncer.log"
                    output = output_path.read_text(errors="replace")
                    raise RuntimeError(
                        f"pgbouncer did not start: {output} "
                        f"{log.read_text() if log.exists() else ''}"
                    ) from None
                time.sleep(0.1)
        yield url.set(port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
