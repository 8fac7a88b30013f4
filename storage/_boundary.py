"""The storage boundary: SQLAlchemy errors become one-line `StorageError`s here, and only here."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from storage.engine import short_reason
from storage.errors import StorageError, StorageInternalError, StorageUnavailable
from storage.urls import mask_url


def masked(engine: Engine) -> str:
    """The engine's URL with the password hidden (also one given as ``?password=``)."""
    return mask_url(engine.url.render_as_string(hide_password=False))


def connect(engine: Engine) -> Connection:
    """Check a connection out of the pool; a failure here means the database is unreachable."""
    try:
        return engine.connect()
    except SQLAlchemyError as e:
        raise StorageUnavailable(
            f"cannot reach database {masked(engine)}: {_reason(engine, e)}"
        ) from e


@contextmanager
def translated(engine: Engine, action: str) -> Iterator[None]:
    """Translate SQLAlchemy errors raised while doing ``action`` into storage errors."""
    try:
        yield
    except StorageError:
        raise
    except DBAPIError as e:
        if e.connection_invalidated:
            raise StorageUnavailable(
                f"lost the connection to {masked(engine)} while {action}: {_reason(engine, e)}"
            ) from e
        raise StorageInternalError(
            f"database error while {action} on {masked(engine)}: {_reason(engine, e)}"
        ) from e
    except SQLAlchemyError as e:
        raise StorageInternalError(
            f"database error while {action} on {masked(engine)}: {_reason(engine, e)}"
        ) from e


def _reason(engine: Engine, error: BaseException) -> str:
    return short_reason(error, engine.url.render_as_string(hide_password=False))


_T = TypeVar("_T")
_MAX_ATTEMPTS = 6
# PostgreSQL SQLSTATEs and MySQL error numbers that mean "run the transaction again".
_PG_RETRYABLE = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock timeout
_MYSQL_RETRYABLE = frozenset({1205, 1213})  # lock wait timeout, deadlock


def retrying(attempt: Callable[[], _T]) -> _T:
    """Run a transaction, again after a deadlock or serialization failure (with backoff)."""
    for number in range(1, _MAX_ATTEMPTS + 1):
        try:
            return attempt()
        except DBAPIError as e:
            if number == _MAX_ATTEMPTS or not is_retryable(e):
                raise
            time.sleep(random.uniform(0.01, 0.05) * 2**number)
    raise AssertionError("unreachable")  # pragma: no cover


def is_retryable(error: DBAPIError) -> bool:
    if isinstance(error, IntegrityError):
        # Only a duplicate version number: the unique constraint caught a race; read again.
        message = str(error.orig).lower()
        return "uq_sweep_model_versions" in message or "sweep_model_versions.version" in message
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate in _PG_RETRYABLE:
        return True
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    # SQLite is not retried: its busy timeout has already waited a minute for the lock.
    return len(args) > 0 and args[0] in _MYSQL_RETRYABLE
