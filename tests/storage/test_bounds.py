"""Network bounds from the patience: the figures, the URL's overrides, and the sessions that
really get them on PostgreSQL, MariaDB and PgBouncer."""

from __future__ import annotations

import pytest
from _pgbouncer import pgbouncer_in_front_of
from sqlalchemy import text

from storage import Database, NetworkBounds, engine_options
from storage.engine import check_reachable


@pytest.mark.parametrize(
    ("patience", "detect", "keepalive", "idle", "connect"),
    [
        (120, 30, (15, 5, 3), 60, 10),  # the default: a silent network noticed in 30 s
        (600, 30, (15, 5, 3), 60, 10),  # a long patience never loosens the network bounds
        (40, 10, (5, 1, 3), 20, 10),
        (10, 5, (2, 1, 3), 5, 3),  # the fault tests' patience
        (1, 5, (2, 1, 3), 5, 2),
    ],
)
def test_every_bound_derives_from_the_patience(
    patience: float, detect: int, keepalive: tuple[int, int, int], idle: int, connect: int
) -> None:
    bounds = NetworkBounds(patience)
    assert bounds.detect_seconds == detect
    assert bounds.keepalive == keepalive
    first_probe, interval, count = keepalive
    assert first_probe + interval * count <= detect  # keepalive gives up within detect
    assert bounds.idle_seconds == idle
    assert bounds.connect_seconds == connect
    assert bounds.statement_seconds == max(1, patience)


def test_the_urls_query_wins_over_a_derived_value() -> None:
    args = engine_options("postgresql://u@h/db?keepalives_idle=60&options=-c%20x%3D1", 10)
    assert "keepalives_idle" not in args["connect_args"]  # SQLAlchemy passes the query's
    assert "options" not in args["connect_args"]
    assert args["connect_args"]["tcp_user_timeout"] == 5000
    mariadb = engine_options("mariadb://u@h/db?read_timeout=7", 10)["connect_args"]
    assert "read_timeout" not in mariadb and mariadb["write_timeout"] == 10


def _session_settings(database: Database) -> dict[str, str]:
    names = (
        "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
        "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
        "tcp_user_timeout",
    )
    with database.engine.connect() as connection:
        return {name: str(connection.execute(text(f"SHOW {name}")).scalar()) for name in names}


@pytest.mark.server
@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_a_postgresql_session_gets_the_bounds(server_url: str) -> None:
    with Database(server_url, patience=10) as database:
        assert _session_settings(database) == {
            "statement_timeout": "10s",
            "lock_timeout": "10s",
            "idle_in_transaction_session_timeout": "5s",
            "tcp_keepalives_idle": "2",
            "tcp_keepalives_interval": "1",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "5000",
        }
    # The user's own value in the URL is the one the session gets.
    with Database(f"{server_url}?options=-c%20statement_timeout%3D3000", patience=10) as database:
        assert _session_settings(database)["statement_timeout"] == "3s"


@pytest.mark.server
@pytest.mark.parametrize("server_url", ["mariadb"], indirect=True)
def test_a_mariadb_session_gets_the_bounds(server_url: str) -> None:
    with Database(server_url, patience=10) as database, database.engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT @@session.max_statement_time, @@session.innodb_lock_wait_timeout, "
                "@@session.wait_timeout"
            )
        ).one()
    assert tuple(row) == (10.0, 10, 5)


@pytest.mark.slow  # starts PgBouncer
@pytest.mark.server
@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_behind_pgbouncer_the_refused_startup_options_are_left_out(server_url: str) -> None:
    """PgBouncer refuses libpq's ``options``: the client's own bounds stay, the server's come
    from PgBouncer's settings (docs/deployment.md)."""
    with pgbouncer_in_front_of(server_url, ignore_options=False) as bounced:
        # An engine made before anything was learnt finds out on its first connection...
        with Database(bounced, patience=10) as database, database.engine.connect() as c:
            assert c.execute(text("SELECT 1")).scalar() == 1
        # ...and every engine after it (Optuna's takes only these options) leaves them out.
        assert "options" not in engine_options(bounced, 10)["connect_args"]
        assert engine_options(bounced, 10)["connect_args"]["tcp_user_timeout"] == 5000
        check_reachable(bounced, 10)
    # The server itself still gets them.
    assert "options" in engine_options(server_url, 10)["connect_args"]
    # A PgBouncer told to ignore them (ignore_startup_parameters = options) drops them.
    with pgbouncer_in_front_of(server_url) as bounced:
        with Database(bounced, patience=10) as database, database.engine.connect() as c:
            assert c.execute(text("SELECT 1")).scalar() == 1
        assert "options" in engine_options(bounced, 10)["connect_args"]
