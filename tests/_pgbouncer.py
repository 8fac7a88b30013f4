"""A real PgBouncer in transaction pooling mode in front of the local PostgreSQL, for tests.

Debian's `pgbouncer` package; installed with apt-get when missing and we are root (as in CI),
else the test is skipped (failed in CI). Started on a free port with a server pool smaller than
its clients, so consecutive transactions of one client really do land on different server
connections: anything relying on session state breaks here.
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

import pytest
from sqlalchemy.engine import make_url

SERVER_POOL_SIZE = 2  # server connections per database, fewer than the clients use


def _binary() -> str | None:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "pgbouncer"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        found = shutil.which("pgbouncer") or (
            "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def pgbouncer_in_front_of(server_url: str) -> Iterator[str]:
    """Start PgBouncer for `server_url`'s database; yields the same URL through PgBouncer."""
    # Its own folder in /tmp: PgBouncer runs as postgres, who cannot enter pytest's tmp_path.
    folder = Path(tempfile.mkdtemp(prefix="sweep-pgbouncer-"))
    try:
        yield from _run(server_url, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(server_url: str, folder: Path) -> Iterator[str]:
    binary = _binary()
    if binary is None:
        message = "pgbouncer is not installed (Debian package `pgbouncer`)"
        if "CI" in os.environ:
            pytest.fail(f"{message} (CI is set, so the PgBouncer test must run)", pytrace=False)
        pytest.skip(message)
    url = make_url(server_url)
    port = _free_port()
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
default_pool_size = {SERVER_POOL_SIZE}
max_client_conn = 100
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
"""
    )
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(folder, "postgres")
        for child in folder.iterdir():
            shutil.chown(child, "postgres")
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = folder / "pgbouncer.log"
                    output = process.stdout.read().decode() if process.poll() is not None else ""
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
