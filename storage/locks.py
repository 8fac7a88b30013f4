"""Cross-process, cross-host named locks, so workers can reserve trial slots exactly.

PostgreSQL uses a transaction-scoped advisory lock (``pg_try_advisory_xact_lock``) held by an
open transaction, so it relies on no session state and works behind PgBouncer in transaction
pooling mode (a session lock would stay on a server connection PgBouncer hands to another
client). MySQL/MariaDB use a named lock (``GET_LOCK``). Both are released by the server when the
holder's session ends, so a killed worker never leaves a lock behind; and a holder that
vanishes (its host gone, its network silent) or freezes is noticed within a minute, not the
two hours of the kernel's default keepalive: the session's server-side keepalive, its idle
transaction timeout (PostgreSQL) or its idle timeout (MariaDB) end it (`storage.bounds`;
behind PgBouncer its own timeouts do, docs/deployment.md). SQLite, a single-host database,
uses ``flock`` on a file next to the database.

The lock is held on its own connection, so the holder may write through other connections
(Optuna's storage, the registry; the same engine) while holding it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from storage._boundary import connect, masked, translated
from storage.errors import StorageUnavailable
from storage.urls import sqlite_file

__all__ = ["NamedLock", "transaction_lock"]

_MEMORY_LOCKS: dict[str, threading.Lock] = {}
_PG_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
# How long one round of waiting for a PostgreSQL lock lasts before the waiter lets go of its
# server connection and queues again.
_PG_WAIT_ROUND_SECONDS = 0.25


def _pg_key(name: str) -> int:
    """A signed 64-bit key for pg_advisory_lock, stable across processes and hosts."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _mysql_name(name: str) -> str:
    # MySQL lock names are limited to 64 characters.
    return "sweep:" + hashlib.sha256(name.encode()).hexdigest()[:40]


class NamedLock:
    """A re-acquirable lock named `name` on the database behind `engine`.

    `release` is idempotent, so a holder can hand the release to code that runs later (the
    objective releases the slot lock as soon as Optuna has created the trial).
    """

    def __init__(self, engine: Engine, name: str, timeout: float = 120.0) -> None:
        self.engine = engine
        self.name = name
        self.timeout = timeout
        self._connection: Connection | None = None
        self._file: int | None = None
        self._memory: threading.Lock | None = None
        self.held = False

    def acquire(self) -> None:
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            self._acquire_sqlite()
        elif dialect == "postgresql":
            self._acquire_postgresql()
        else:
            self._acquire_mysql(
                text("SELECT GET_LOCK(:name, 1)"), {"name": _mysql_name(self.name)}
            )
        self.held = True

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now, else return False at once (one round trip).

        Lets a worker that finds one operation's slots being reserved by another go and
        reserve a slot of another operation instead of queueing behind it.
        """
        dialect = self.engine.dialect.name
        got = self._try_sqlite() if dialect == "sqlite" else self._try_on_server()
        self.held = got
        return got

    def _try_on_server(self) -> bool:
        """PostgreSQL's transaction-scoped advisory lock, or MySQL's session lock, if free."""
        postgres = self.engine.dialect.name == "postgresql"
        statement, params = (
            ("SELECT pg_try_advisory_xact_lock(:key)", {"key": _pg_key(self.name)}) if postgres
            else ("SELECT GET_LOCK(:name, 0)", {"name": _mysql_name(self.name)})
        )
        connection = connect(self.engine)
        try:
            with translated(self.engine, f"taking lock {self.name!r}"):
                got = connection.execute(text(statement), params).scalar() in (True, 1)
                if not postgres:
                    connection.commit()  # GET_LOCK's lock is the session's, not the transaction's
                elif not got:
                    connection.rollback()
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def _try_sqlite(self) -> bool:
        path = sqlite_file(self.engine.url)
        if path is None:
            memory = _MEMORY_LOCKS.setdefault(self.name, threading.Lock())
            if not memory.acquire(blocking=False):
                return False
            self._memory = memory
            return True
        fd = os.open(self._sqlite_lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._file = fd
        return True

    def _sqlite_lock_path(self, database: Path) -> Path:
        # One hidden folder next to the database keeps the lock files out of the user's way.
        folder = database.parent / f".{database.name}.locks"
        folder.mkdir(exist_ok=True)
        return folder / f"{hashlib.sha256(self.name.encode()).hexdigest()[:16]}.lock"

    def _acquire_postgresql(self) -> None:
        """Wait in the server's lock queue in short rounds, ending the transaction between them.

        Within a round the server wakes the waiter the moment the lock is free (no polling
        traffic, however many workers wait). Between rounds the waiter holds no server
        connection: behind PgBouncer every open transaction pins one of its few server
        connections, and waiters that never let go could starve the holder, which needs a
        second one to create its trial.
        """
        connection = connect(self.engine)
        deadline = time.monotonic() + self.timeout
        key = {"key": _pg_key(self.name)}
        round_ms = int(_PG_WAIT_ROUND_SECONDS * 1000)
        try:
            with translated(self.engine, f"taking lock {self.name!r}"):
                while True:
                    connection.execute(text(f"SET LOCAL lock_timeout = {round_ms}"))
                    try:
                        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)
                        break
                    except DBAPIError as e:
                        if getattr(e.orig, "sqlstate", None) != _PG_LOCK_NOT_AVAILABLE:
                            raise
                    connection.rollback()
                    if time.monotonic() > deadline:
                        raise StorageUnavailable(
                            f"could not take lock {self.name!r} on {masked(self.engine)} "
                            f"within {self.timeout:g} s"
                        )
                # The lock lives as long as this transaction, open until `release`; the
                # statements run under it get the session's bound, not the short round.
                connection.execute(text("SET LOCAL lock_timeout = DEFAULT"))
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        self._connection = connection

    def _acquire_mysql(self, statement: object, params: dict[str, object]) -> None:
        connection = connect(self.engine)
        deadline = time.monotonic() + self.timeout
        try:
            with translated(self.engine, f"taking lock {self.name!r}"):
                while True:
                    got = connection.execute(statement, params).scalar()  # type: ignore[call-overload]
                    connection.commit()  # GET_LOCK's lock is the session's, not the transaction's
                    if got in (True, 1):
                        break
                    if time.monotonic() > deadline:
                        raise StorageUnavailable(
                            f"could not take lock {self.name!r} on {masked(self.engine)} "
                            f"within {self.timeout:g} s"
                        )  # GET_LOCK already waited 1 s server-side
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        self._connection = connection

    def _acquire_sqlite(self) -> None:
        path = sqlite_file(self.engine.url)
        if path is None:  # in-memory database: one process only
            self._memory = _MEMORY_LOCKS.setdefault(self.name, threading.Lock())
            if not self._memory.acquire(timeout=self.timeout):
                raise StorageUnavailable(f"could not take lock {self.name!r} in {self.timeout} s")
            return
        lock_path = self._sqlite_lock_path(path)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise StorageUnavailable(
                        f"could not take lock {self.name!r} ({lock_path}) in {self.timeout:g} s"
                    ) from None
                time.sleep(0.02)
        self._file = fd

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._memory is not None:
            self._memory.release()
            self._memory = None
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            os.close(self._file)
            self._file = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                if self.engine.dialect.name == "postgresql":
                    connection.rollback()  # ends the transaction, and with it the lock
                else:
                    connection.execute(
                        text("SELECT RELEASE_LOCK(:name)"), {"name": _mysql_name(self.name)}
                    )
                connection.commit()
                connection.close()
            except Exception:
                # The server drops a dead session's locks; never reuse this connection.
                connection.invalidate()
                connection.close()

    def __enter__(self) -> NamedLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextmanager
def transaction_lock(connection: Connection, name: str, timeout: float = 120.0) -> Iterator[None]:
    """Serialise the transaction open on `connection` with others taking the lock `name`.

    PostgreSQL: an advisory lock taken inside that very transaction and released when it ends
    (commit or rollback), so the holder needs no second connection: behind PgBouncer, holders
    that each wanted one more server connection could otherwise take them all and wait for
    each other. The wait is bounded by a transaction-local ``lock_timeout``. Other databases:
    a `NamedLock` on its own connection, held until the block ends.

    Raises:
        StorageUnavailable: the lock was not free within `timeout` seconds.
    """
    engine = connection.engine
    if engine.dialect.name != "postgresql":
        with NamedLock(engine, name, timeout):
            yield
        return
    milliseconds = max(1, int(timeout * 1000))
    with translated(engine, f"taking lock {name!r}"):
        # The session's statement timeout (the patience) must not cut this wait short.
        connection.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
        connection.execute(text(f"SET LOCAL statement_timeout = {milliseconds + 1000}"))
        try:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _pg_key(name)})
        except DBAPIError as e:
            if getattr(e.orig, "sqlstate", None) != _PG_LOCK_NOT_AVAILABLE:
                raise
            raise StorageUnavailable(
                f"could not take lock {name!r} on {masked(engine)} within {timeout:g} s"
            ) from None
        connection.execute(text("SET LOCAL lock_timeout = DEFAULT"))
        connection.execute(text("SET LOCAL statement_timeout = DEFAULT"))
    yield
