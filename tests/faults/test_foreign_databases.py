"""Round three, case 5: read-only commands pointed at a database that is not a sweep's.

`sweep best`/`models` (and every reader) used to create the four `sweep_*` tables in another
application's PostgreSQL or MariaDB database, even in MariaDB's `mysql` system schema, and
`sweep best` in an empty folder created `sweeps.db`. Readers now refuse in one line and leave
the database as it was; `run` and `worker` still create a fresh sweep database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy
from _fault_helpers import assert_one_line_error, run_main, sweep_env
from _servers import admin_url, require_server
from sqlalchemy.pool import NullPool

READERS = (
    ["best"], ["best", "--format", "json"], ["models"], ["models", "add"],
    ["predict", "add", "1", "2"], ["pull", "add"], ["report"], ["dashboard", "--port", "0"],
)


def _tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(sqlalchemy.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _refused_by_every_reader(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *expected: str
) -> None:
    env = sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith")
    for args in READERS:
        done = run_main(args, env, tmp_path, capsys)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert_one_line_error(done.stderr, *expected)


def test_another_applications_database_is_refused_and_left_alone(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sqlalchemy.create_engine(server_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    _refused_by_every_reader(server_url, tmp_path, capsys, "not a sweep database")
    assert _tables(server_url) == {"customers"}


def test_an_empty_server_database_is_not_given_tables_by_a_reader(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused_by_every_reader(server_url, tmp_path, capsys, "run `sweep run` first")
    assert _tables(server_url) == set()


@pytest.mark.server
def test_mariadbs_system_schema_is_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_server("mariadb")
    system = admin_url("mariadb").rsplit("/", 1)[0] + "/mysql"
    before = _tables(system)
    _refused_by_every_reader(system, tmp_path, capsys, "not a sweep database")
    assert _tables(system) == before
    assert not any(name.startswith("sweep_") for name in before)


def test_a_reader_in_an_empty_folder_creates_no_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    _refused_by_every_reader(url, tmp_path, capsys, "no database at", "run `sweep run` first")
    assert not (tmp_path / "sweeps.db").exists()
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty file: SQLite's "no tables"
    _refused_by_every_reader(f"sqlite:///{empty}", tmp_path, capsys, "run `sweep run` first")
    assert _tables(f"sqlite:///{empty}") == set()
