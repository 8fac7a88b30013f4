"""optuna-dashboard itself, served on the sweep's own storage (`sweep dashboard`).

The studies' notes and artifacts it shows are written by `sweep.publishing.notes`, into a
folder or a bucket (`sweep.publishing.artifacts`).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import socketserver
import warnings
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from storage import Database
from sweep.errors import DashboardError
from sweep.publishing.artifacts import artifact_place, open_artifact_store
from sweep.search import open_existing_storage
from sweep.settings import ArtifactPlace

__all__ = ["DashboardServer", "is_loopback", "open_dashboard", "serve_dashboard"]


# --- the dashboard server ---------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: the terminal keeps the URL and the stop message."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per request: the dashboard's page fetches several API routes at once."""

    daemon_threads = True  # Ctrl-C does not wait for a browser's keep-alive connections.
    block_on_close = False
    allow_reuse_port = False  # Never share a port another server is listening on.

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # A browser closing a connection early is not worth a traceback.


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class DashboardServer:
    """optuna-dashboard bound to a port, not yet serving; `url` is where to point a browser."""

    def __init__(
        self, server: WSGIServer, storage: optuna.storages.RDBStorage, url: str
    ) -> None:
        self._server = server
        self._storage = storage
        self.url = url

    def serve_forever(self) -> None:
        """Serve until interrupted (KeyboardInterrupt propagates to the caller)."""
        # optuna-dashboard computes importances per page view; Optuna's "may be inaccurate"
        # warnings would otherwise bury the URL under a screenful per click.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server.serve_forever(poll_interval=0.25)

    def close(self) -> None:
        self._server.server_close()
        self._storage.remove_session()
        self._storage.engine.dispose()


_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_REFUSED = b'{"error": "this dashboard is read-only (sweep dashboard --read-only)"}'


def _read_only(app: Any) -> Any:
    """WSGI middleware: a request that could change the database gets 403 and a JSON line."""

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("REQUEST_METHOD", "GET")).upper() in _READS:
            return app(environ, start_response)
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(_REFUSED)))],
        )
        return [_REFUSED]

    return guarded


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the dashboard on this machine (every address it resolves
    to is a loopback address)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    try:
        return bool(addresses) and all(
            ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses
        )
    except ValueError:
        return False


def open_dashboard(
    database: Database,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifact_dir: str | os.PathLike[str] | ArtifactPlace | None = None,
    *,
    read_only: bool = False,
) -> DashboardServer:
    """Bind optuna-dashboard to `host`:`port` on the sweep's storage; serving starts later.

    Binding first lets the caller report a busy port as one line and print the URL only once
    it is true. Port 0 picks a free port (see `DashboardServer.url`). `read_only` refuses
    every request but GET and HEAD (optuna-dashboard changes the database only through POST,
    PUT and DELETE: notes, renames, deleting studies, telling trials).

    Raises:
        DashboardError: The port is taken or not allowed, the host is unknown, the SQLite file
            or the artifact folder does not exist, the artifact bucket cannot be used
            (`sweep.publishing.artifacts.open_s3_store`), or optuna-dashboard is not installed.
        storage.StorageError: The database cannot be reached.
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardError(
            "optuna-dashboard is not installed; pip install optuna-dashboard (a dependency of "
            "neural-arithmetic-sweep: reinstall it)"
        ) from None
    store = None
    if artifact_dir is not None:
        # A bucket is probed here: a wrong one is one line before the URL is printed.
        store = open_artifact_store(artifact_place(artifact_dir), DashboardError, create=False)
    storage = open_existing_storage(database, DashboardError)
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    if read_only:
        app = _read_only(app)
    server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
    try:
        server = make_server(host, port, app, server_class=server_class,
                             handler_class=_QuietHandler)
    except OSError as e:
        storage.engine.dispose()
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(
                f"port {port} on {host} is already in use; pick another with --port"
            ) from None
        reason = e.strerror or str(e) or type(e).__name__
        raise DashboardError(f"cannot listen on {host}:{port}: {reason}") from None
    bound_port = server.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    return DashboardServer(server, storage, f"http://{shown_host}:{bound_port}/dashboard")


def serve_dashboard(
    database: Database,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifact_dir: str | os.PathLike[str] | ArtifactPlace | None = None,
) -> None:
    """Run optuna-dashboard on the sweep's storage until Ctrl-C (which returns normally).

    Raises:
        DashboardError: As `open_dashboard`.
    """
    server = open_dashboard(database, host, port, artifact_dir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()

