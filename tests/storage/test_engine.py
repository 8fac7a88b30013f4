"""Engines: SQLite pragmas, bounded server pools, reachability checks that leak no password."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from _servers import admin_url, require_server
from sqlalchemy import inspect, text

from storage import (
    ModelRegistry,
    StorageUnavailable,
    check_reachable,
    create_engine,
    enable_sqlite_wal,
    engine_options,
    ensure_schema,
)

SECRET = "S3cr3t-pw"


def test_engine_options_per_dialect() -> None:
    assert engine_options("sqlite:///x.db") == {"connect_args": {"timeout": 60}}
    for url in ("postgresql://u@h/db", "mariadb://u@h/db"):
        options = engine_options(url)
        assert options["pool_pre_ping"] is True
        # A worker's one engine: one connection kept, at most two at once.
        assert (options["pool_size"], options["max_overflow"]) == (1, 1)
        assert options["pool_recycle"] == 300
    # Every wait bounded by the patience (tests/storage/test_bounds.py has the figures).
    mariadb = engine_options("mariadb://u@h/db")["connect_args"]
    assert (mariadb["connect_timeout"], mariadb["read_timeout"]) == (10, 120)
    postgresql = engine_options("postgresql://u@h/db")["connect_args"]
    assert postgresql["connect_timeout"] == 10
    assert (postgresql["keepalives"], postgresql["tcp_user_timeout"]) == (1, 30_000)
    # No server-side prepared statements (PgBouncer in transaction pooling mode).
    assert postgresql["prepare_threshold"] is None
    # A fresh dict each time: Optuna adds keys to the one it is given.
    first = engine_options("postgresql://u@h/db")
    first["connect_args"]["extra"] = 1
    assert "extra" not in engine_options("postgresql://u@h/db")["connect_args"]


def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60_000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
    # WAL is a property of the file: a plain connection sees it too.
    with sqlite3.connect(tmp_path / "a.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_ddl_is_transactional(tmp_path: Path) -> None:
    # Migrations rely on it; pysqlite's default transaction handling would autocommit DDL.
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with engine.connect() as connection:
            with connection.begin() as transaction:
                connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                transaction.rollback()
            assert not inspect(connection).has_table("t")
    finally:
        engine.dispose()


_OPEN_AT = """
import sys, time
from sqlalchemy import text
from storage import create_engine
url, at = sys.argv[1], float(sys.argv[2])
while time.time() < at:
    pass
with create_engine(url).connect() as connection:
    connection.execute(text("SELECT 1"))
"""


@pytest.mark.slow  # a real process (or several): the slow tier
def test_processes_opening_a_fresh_sqlite_file_together_all_get_in(tmp_path: Path) -> None:
    """Switching to WAL raced: SQLite answers "database is locked" at once, without its busy
    timeout, to all but one of several connections switching together (seen in CI)."""
    for attempt in range(4):
        url = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        at = str(time.time() + 1.5)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, url, at],
                stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
            )
            for _ in range(8)
        ]
        errors = [p.communicate(timeout=60)[1] for p in processes]
        assert [p.returncode for p in processes] == [0] * 8, "\n".join(errors)


def test_enable_sqlite_wal(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    enable_sqlite_wal(f"sqlite:///{path}")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    enable_sqlite_wal("sqlite:///:memory:")  # Nothing to do, and no error.
    enable_sqlite_wal("postgresql://u@h/db")  # Not SQLite: nothing to do, no connection made.


def test_check_reachable_sqlite(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    check_reachable(f"sqlite:///{fresh}")
    assert not fresh.exists(), "a check must not create the database"
    check_reachable("sqlite:///:memory:")

    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(StorageUnavailable) as info:
        check_reachable(f"sqlite:///{missing}")
    assert str(missing.parent) in str(info.value)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(StorageUnavailable, match="not a database"):
        check_reachable(f"sqlite:///{garbage}")


def test_registry_on_missing_sqlite_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable, match="does not exist"):
        ModelRegistry(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:1/db",
        f"mysql+pymysql://alice:{SECRET}@127.0.0.1:1/db",
    ],
    ids=["postgresql", "mariadb"],
)
def test_unreachable_server_fails_fast_without_password(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        check_reachable(url)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert SECRET not in message
    assert "alice:***@127.0.0.1:1/db" in message
    assert "\n" not in message

    with pytest.raises(StorageUnavailable) as info:
        ModelRegistry(url)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


@pytest.mark.server
def test_wrong_password_on_mariadb_is_masked() -> None:
    require_server("mariadb")
    url = admin_url("mariadb").replace("root@", f"root:{SECRET}@", 1)
    with pytest.raises(StorageUnavailable) as info:
        check_reachable(url)
    assert "Access denied" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.server
def test_missing_server_database_is_not_created() -> None:
    require_server("postgresql")
    url = admin_url("postgresql").rsplit("/", 1)[0] + "/sweep_no_such_database"
    with pytest.raises(StorageUnavailable, match="sweep_no_such_database"):
        check_reachable(url)
    with pytest.raises(StorageUnavailable):
        check_reachable(url)  # Still missing: the first check created nothing.


def test_check_reachable_on_live_database(storage_url: str) -> None:
    check_reachable(storage_url)


def test_options_work_for_optuna_next_to_our_tables(storage_url: str) -> None:
    """Optuna's RDBStorage accepts our engine options, and its tables coexist with ours."""
    enable_sqlite_wal(storage_url)
    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs=engine_options(storage_url))
    try:
        study = optuna.create_study(study_name="s", storage=storage)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    finally:
        storage.engine.dispose()
    engine = create_engine(storage_url)
    try:
        ensure_schema(engine)
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            assert {"studies", "trials", "sweep_model_versions", "sweep_best"} <= tables
            trials = connection.execute(text("SELECT count(*) FROM trials")).scalar()
            assert trials == 2
    finally:
        engine.dispose()
