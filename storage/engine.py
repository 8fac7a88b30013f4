"""Per-dialect engine options: SQLite in WAL mode with a busy timeout, bounded server pools,
and every wait on a server bounded by the patience (`storage.bounds`).

The same options are valid as Optuna's ``RDBStorage(url, engine_kwargs=engine_options(url))``,
so Optuna's engine and ours treat the database alike.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from storage.bounds import DEFAULT_PATIENCE_SECONDS, NetworkBounds, refuses_startup_options
from storage.errors import StorageInternalError, StorageUnavailable
from storage.urls import StorageURL, as_storage_url, redact_password

__all__ = [
    "SERVER_MAX_OVERFLOW",
    "SERVER_POOL_SIZE",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "check_reachable",
    "create_engine",
    "enable_sqlite_wal",
    "engine_options",
    "require_sqlite_directory",
    "short_reason",
    "sqlite_path",
]

SQLITE_BUSY_TIMEOUT_SECONDS = 60
# Many workers share one server, and each worker process uses one engine for Optuna's storage,
# the named locks and the registry: one connection kept open, a second only while the slot
# lock is held (or a heartbeat overlaps a write) and closed when returned. So a worker holds
# at most 2 server connections and 1 when idle (docs/deployment.md sizes max_connections).
SERVER_POOL_SIZE = 1
SERVER_MAX_OVERFLOW = 1
_SERVER_POOL: dict[str, Any] = {
    "pool_pre_ping": True,
    "pool_size": SERVER_POOL_SIZE,
    "max_overflow": SERVER_MAX_OVERFLOW,
    "pool_recycle": 300,
    "pool_timeout": 30,
}
# Servers (host, port, database, user) that refused libpq's startup ``options``: PgBouncer.
# Learnt by the first connection (or `check_reachable`); later engines leave them out.
_REFUSE_OPTIONS: set[tuple[object, ...]] = set()
# Execution option read by our SQLite "begin" hook: take the write lock when the transaction
# starts instead of at the first write, so read-compare-write sequences cannot interleave.
SQLITE_BEGIN_IMMEDIATE = "sweep_sqlite_begin_immediate"


def engine_options(
    url: StorageURL | str, patience: float = DEFAULT_PATIENCE_SECONDS
) -> dict[str, Any]:
    """Keyword arguments for `sqlalchemy.create_engine` (and Optuna's ``engine_kwargs``).

    On a server every wait is bounded by `patience` (`storage.bounds.NetworkBounds`): TCP
    keepalive and a user timeout on the client, statement, lock and idle timeouts and the
    server's own keepalive on the session; keys the URL's query sets are left to it.
    Returns a new dict on every call: Optuna adds keys to the dict it is given.

    Raises:
        InvalidStorageURL: The URL is not a supported storage URL.
    """
    parsed = as_storage_url(url)
    dialect = parsed.dialect
    if dialect == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    bounds = NetworkBounds(patience)
    query = parsed.parsed.query
    connect_args: dict[str, Any]
    if dialect == "postgresql":
        connect_args = bounds.postgresql_connect_args(query)
        if _server_key(parsed.parsed) in _REFUSE_OPTIONS and "options" not in query:
            connect_args.pop("options", None)
        # No server-side prepared statements: behind PgBouncer in transaction pooling mode
        # consecutive transactions may run on different server connections, where a statement
        # psycopg prepared on another one does not exist.
        connect_args["prepare_threshold"] = None
    else:
        connect_args = bounds.mysql_connect_args(query)
    return {**_SERVER_POOL, "connect_args": connect_args}


def _server_key(url: URL) -> tuple[object, ...]:
    return (url.host, url.port, url.database, url.username)


def _connect_without_refused_options(
    dialect: Any, _record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
) -> Any:
    """SQLAlchemy's ``do_connect`` hook on PostgreSQL: a server that refuses the startup
    ``options`` (PgBouncer) is connected to without them, and remembered."""
    if "options" not in cparams:
        return None
    try:
        return dialect.connect(*cargs, **cparams)
    except dialect.loaded_dbapi.OperationalError as e:
        if not refuses_startup_options(e):
            raise
    key = (cparams.get("host"), cparams.get("port"), cparams.get("dbname"), cparams.get("user"))
    _REFUSE_OPTIONS.add(key)
    del cparams["options"]
    return None


def create_engine(
    url: StorageURL | str, patience: float = DEFAULT_PATIENCE_SECONDS
) -> Engine:
    """Create an engine for a storage URL with the options of `engine_options`.

    On SQLite every new connection gets WAL mode (readers never block the writer), a busy
    timeout (writers wait instead of failing with "database is locked") and foreign keys; and
    transactions are begun explicitly, so DDL is transactional and a connection with the
    ``SQLITE_BEGIN_IMMEDIATE`` execution option takes the write lock up front.

    Raises:
        InvalidStorageURL: The URL is not a supported storage URL.
    """
    parsed = as_storage_url(url)
    options = engine_options(parsed, patience)
    path = parsed.sqlite_path
    if path is not None and read_only_sqlite(path):
        # A database on a read-only mount (or a file we may not write): WAL needs its -shm
        # file, so open it immutable; reads work, any write fails with one clear line.
        uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
        options["creator"] = lambda: sqlite3.connect(
            uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, check_same_thread=False
        )
        options.pop("connect_args", None)
    engine = sqlalchemy.create_engine(parsed.parsed, **options)
    if engine.dialect.name == "sqlite":
        read_only = "creator" in options
        on_connect = _sqlite_on_connect_read_only if read_only else _sqlite_on_connect
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "do_connect", _connect_without_refused_options)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # pysqlite's own implicit BEGIN (only before DML, never before DDL or SELECT) breaks
    # transactional DDL and BEGIN IMMEDIATE; switch it off and begin in _sqlite_on_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so switching to WAL waits for a concurrent writer.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        _switch_to_wal(cursor)
    finally:
        cursor.close()


def read_only_sqlite(path: Path) -> bool:
    """An existing SQLite file this process cannot write (a read-only mount, its mode)."""
    if not path.is_file():
        return False
    folder = path.parent if str(path.parent) else Path(".")
    return not (os.access(path, os.W_OK) and os.access(folder, os.W_OK))


def _sqlite_on_connect_read_only(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None  # as _sqlite_on_connect; no WAL switch: no writes


def _switch_to_wal(cursor: Any) -> None:
    """WAL is stored in the file: only the first connection switches, the others see it.

    Switching needs the file to itself, and SQLite answers "database is locked" at once,
    without waiting the busy timeout, when another connection holds a lock it would
    deadlock on; several processes opening a fresh file together hit that. Retry until the
    busy timeout has passed.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(SQLITE_BEGIN_IMMEDIATE):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def sqlite_path(url: StorageURL | str) -> Path | None:
    """The database file of a SQLite URL; None for in-memory or non-SQLite URLs."""
    return as_storage_url(url).sqlite_path


def enable_sqlite_wal(url: StorageURL | str) -> None:
    """Switch a SQLite file to WAL once; WAL is persistent, so Optuna's engine gets it too.

    Does nothing for servers and in-memory databases. Creates the file if it is missing.

    Raises:
        StorageUnavailable: The file's directory does not exist or the file cannot be opened.
    """
    parsed = as_storage_url(url)
    path = parsed.sqlite_path
    if path is None:
        return
    _require_parent(path, parsed)
    try:
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise StorageUnavailable(
            f"cannot open SQLite database {str(path)!r}: {short_reason(e)}"
        ) from e


def check_reachable(url: StorageURL | str, patience: float = DEFAULT_PATIENCE_SECONDS) -> None:
    """Connect once and run ``SELECT 1``; creates nothing (no server database, no SQLite file).

    With the bounds of `engine_options`; a PgBouncer that refuses the startup ``options`` is
    learnt here, before Optuna's engine (which takes only `engine_options`) connects.

    Raises:
        InvalidStorageURL: The URL is not a supported storage URL.
        StorageUnavailable: The database cannot be reached; the message names the masked URL
            and the first line of the driver's reason.
    """
    parsed = as_storage_url(url)
    if parsed.dialect == "sqlite":
        _check_sqlite(parsed)
        return
    engine = sqlalchemy.create_engine(
        parsed.parsed,
        poolclass=NullPool,
        connect_args=engine_options(parsed, patience)["connect_args"],
    )
    if parsed.dialect == "postgresql":
        event.listen(engine, "do_connect", _connect_without_refused_options)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as e:
        raise StorageUnavailable(
            f"cannot reach database {parsed.masked}: {short_reason(e, parsed)}"
        ) from e
    except SQLAlchemyError as e:
        raise StorageInternalError(
            f"unexpected error checking {parsed.masked}: {short_reason(e, parsed)}"
        ) from e
    finally:
        engine.dispose()


def _check_sqlite(url: StorageURL) -> None:
    path = url.sqlite_path
    if path is None:
        return  # In memory: always reachable.
    _require_parent(path, url)
    if not path.exists():
        if not os.access(path.parent if str(path.parent) else ".", os.W_OK):
            raise StorageUnavailable(
                f"cannot create SQLite database {str(path)!r}: directory is not writable"
            )
        return  # It will be created on first use; checking must not create it.
    try:
        # Opened read-only so a check never writes; reading the schema proves it is SQLite.
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS
        )
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise StorageUnavailable(
            f"cannot open SQLite database {str(path)!r}: {short_reason(e)}"
        ) from e


def require_sqlite_directory(url: StorageURL | str) -> None:
    """Fail clearly when a SQLite file's directory is missing (SQLite only says "unable to open").

    Raises:
        StorageUnavailable: The directory does not exist.
    """
    parsed = as_storage_url(url)
    path = parsed.sqlite_path
    if path is not None:
        _require_parent(path, parsed)


def _require_parent(path: Path, url: StorageURL) -> None:
    parent = path.parent
    if str(parent) and not parent.is_dir():
        raise StorageUnavailable(
            f"cannot open SQLite database {url.masked}: directory {str(parent)!r} does not exist"
        )


def short_reason(error: BaseException, url: StorageURL | str | None = None) -> str:
    """First line of the driver's message (without SQLAlchemy's SQL echo), password scrubbed."""
    original = getattr(error, "orig", None)
    source = original if isinstance(original, BaseException) else error
    args = source.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        # PyMySQL's (errno, message) tuples.
        text_ = f"{args[1]} (MySQL error {args[0]})"
    else:
        text_ = str(source)
    lines = [" ".join(line.split()) for line in text_.splitlines() if line.strip()]
    reason = lines[0] if lines else type(source).__name__
    if len(reason) > 300:
        reason = reason[:297] + "..."
    if url is None:
        return reason
    return redact_password(reason, url.text if isinstance(url, StorageURL) else url)
