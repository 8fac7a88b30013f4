"""The storage boundary: SQLAlchemy errors become one-line `StorageError`s here, and only here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

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
