"""Throwaway databases on the local PostgreSQL and MariaDB servers, for tests.

Each test gets a fresh, uniquely named database, so tests can run in parallel and never see
each other's rows. The admin URLs can be overridden for CI with ``SWEEP_TEST_POSTGRESQL_URL``
and ``SWEEP_TEST_MARIADB_URL`` (they must name an existing database to connect to).
"""

from __future__ import annotations

import os
import uuid
from typing import Literal

import pytest
import sqlalchemy
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

ServerKind = Literal["postgresql", "mariadb"]
SERVER_KINDS: tuple[ServerKind, ...] = ("postgresql", "mariadb")

_DEFAULT_ADMIN_URLS: dict[ServerKind, str] = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
_ENV_VARS: dict[ServerKind, str] = {
    "postgresql": "SWEEP_TEST_POSTGRESQL_URL",
    "mariadb": "SWEEP_TEST_MARIADB_URL",
}
_DATABASE_PREFIX = "sweep_test_"
_reachability: dict[ServerKind, str | None] = {}


def admin_url(kind: ServerKind) -> str:
    """The URL of an existing database on the server, used to create and drop test databases."""
    return os.environ.get(_ENV_VARS[kind], _DEFAULT_ADMIN_URLS[kind])


def _admin_engine(kind: ServerKind) -> Engine:
    return sqlalchemy.create_engine(
        admin_url(kind),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE cannot run in a transaction.
        connect_args={"connect_timeout": 5},
    )


def unreachable_reason(kind: ServerKind) -> str | None:
    """None when the server answers, else why not (checked once per test session)."""
    if kind not in _reachability:
        engine = _admin_engine(kind)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
            _reachability[kind] = None
        except Exception as e:
            first_line = str(getattr(e, "orig", e)).splitlines()[0] if str(e) else repr(e)
            _reachability[kind] = f"{type(e).__name__}: {first_line}"
        finally:
            engine.dispose()
    return _reachability[kind]


def require_server(kind: ServerKind) -> None:
    """Skip the test when the server is down, but fail it in CI (where it must be up)."""
    reason = unreachable_reason(kind)
    if reason is None:
        return
    shown = make_url(admin_url(kind)).render_as_string(hide_password=True)
    message = f"{kind} server at {shown} is unreachable: {reason}"
    if "CI" in os.environ:
        pytest.fail(f"{message} (CI is set, so server tests must run)", pytrace=False)
    pytest.skip(message)


def make_server_database(kind: ServerKind) -> str:
    """Create a fresh, uniquely named database on the server and return its URL."""
    name = f"{_DATABASE_PREFIX}{uuid.uuid4().hex[:16]}"
    engine = _admin_engine(kind)
    try:
        with engine.connect() as connection:
            if kind == "postgresql":
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                connection.exec_driver_sql(
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
    finally:
        engine.dispose()
    return make_url(admin_url(kind)).set(database=name).render_as_string(hide_password=False)


def drop_server_database(kind: ServerKind, url: str) -> None:
    """Drop a database made by `make_server_database`, ending any sessions still using it."""
    name = make_url(url).database
    if not name or not name.startswith(_DATABASE_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    engine = _admin_engine(kind)
    try:
        with engine.connect() as connection:
            if kind == "postgresql":
                connection.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            else:
                # A leftover session's metadata lock would make DROP DATABASE wait forever.
                leftover = connection.execute(
                    sqlalchemy.text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = :name AND id <> CONNECTION_ID()"
                    ),
                    {"name": name},
                ).scalars()
                for session_id in list(leftover):
                    connection.exec_driver_sql(f"KILL {int(session_id)}")
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        engine.dispose()


# A worker's opening of Optuna's storage, for `start_together` (conftest): prints whether the
# opened storage is empty, as it is on a fresh database.
OPEN_OPTUNA_STORAGE = """
import json, sys
from storage import Database
from sweep.search.storage import optuna_storage
print("ready", flush=True)
sys.stdin.readline()
storage = optuna_storage(Database(sys.argv[1]))
print(json.dumps(storage.get_all_studies() == []))
storage.engine.dispose()
"""


def assert_optuna_tables_stamped_once(url: str) -> None:
    """Racers created Optuna's tables once: one version row, one alembic revision."""
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            for table in ("version_info", "alembic_version"):
                rows = connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}"))
                assert rows.scalar_one() == 1, table
    finally:
        engine.dispose()
