"""Behind a real PgBouncer in transaction pooling mode: locks and budgets without session state."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from _pgbouncer import SERVER_POOL_SIZE, pgbouncer_in_front_of
from _servers import (
    OPEN_OPTUNA_STORAGE,
    assert_optuna_tables_stamped_once,
    drop_server_database,
    make_server_database,
    require_server,
)
from conftest import StartTogether
from optuna.trial import TrialState

from storage import Database, ModelRegistry, StorageUnavailable, create_engine
from storage.locks import NamedLock

pytestmark = pytest.mark.server


@pytest.fixture
def direct_url() -> Iterator[str]:
    require_server("postgresql")
    url = make_server_database("postgresql")
    try:
        yield url
    finally:
        drop_server_database("postgresql", url)


@pytest.fixture
def bouncer_url(direct_url: str) -> Iterator[str]:
    with pgbouncer_in_front_of(direct_url) as url:
        yield url


def _advisory_locks(direct_url: str) -> int:
    engine = sqlalchemy.create_engine(direct_url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            database = sqlalchemy.engine.make_url(direct_url).database
            return int(connection.execute(sqlalchemy.text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = :db"
            ), {"db": database}).scalar_one())
    finally:
        engine.dispose()


def test_named_lock_is_exclusive_behind_pgbouncer(direct_url: str, bouncer_url: str) -> None:
    holder, contender, busy = (create_engine(bouncer_url) for _ in range(3))
    try:
        lock = NamedLock(holder, "slots", timeout=10)
        lock.acquire()
        # Other clients' transactions go through the same few server connections meanwhile.
        for _ in range(4 * SERVER_POOL_SIZE):
            with busy.connect() as connection:
                assert connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
        assert _advisory_locks(direct_url) == 1
        with pytest.raises(StorageUnavailable, match="could not take lock 'slots'"):
            NamedLock(contender, "slots", timeout=1).acquire()
        lock.release()
        lock.release()  # idempotent
        assert _advisory_locks(direct_url) == 0
        with NamedLock(contender, "slots", timeout=10):
            assert _advisory_locks(direct_url) == 1
        assert _advisory_locks(direct_url) == 0
    finally:
        for engine in (holder, contender, busy):
            engine.dispose()


def test_registry_schema_and_campaign_lock_behind_pgbouncer(bouncer_url: str) -> None:
    # The registry's schema upgrade and campaign registration take named locks and write
    # through a second connection: both through PgBouncer.
    with Database(bouncer_url) as database:
        database.campaigns.register("bounced", lambda stored: {"trials": 3})
    with Database(bouncer_url) as database:
        assert database.campaigns.register("bounced", lambda stored: None) == {"trials": 3}


@pytest.mark.slow
def test_two_workers_fill_an_exact_budget_behind_pgbouncer(
    direct_url: str, tmp_path: Path
) -> None:
    # The pool docs/deployment.md asks for: opening Optuna's storage holds 2 server
    # connections at once, so workers starting together need 2 each (a smaller pool can
    # deadlock until PgBouncer's query_wait_timeout).
    from benchmarks.pgbouncer import pgbouncer_in_front_of as bouncer

    with bouncer(direct_url, pool_size=4) as bouncer_url:
        _two_workers(direct_url, bouncer_url, tmp_path)


def _two_workers(direct_url: str, bouncer_url: str, tmp_path: Path) -> None:
    config = tmp_path / "campaign.toml"
    config.write_text(
        """
[campaign]
operations = ["add"]
trials = 6
stop_when_exact = false
[data]
examples = 600
test_examples = 200
extrapolation_examples = 200
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""
    )
    env = {**os.environ, "SWEEP_STORAGE": bouncer_url, "SWEEP_CAMPAIGN": "bounced",
           "SWEEP_WORKERS": "2"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "sweep", "worker", "--config", str(config)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=400)
            assert worker.returncode == 0, stderr
            assert "Traceback" not in stderr and "database error" not in stderr, stderr
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    study = optuna.load_study(study_name="bounced.add", storage=direct_url)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 6, states
    assert not {TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL} & set(states), states
    workers_seen = {t.user_attrs.get("worker") for t in study.get_trials(deepcopy=False)}
    assert len(workers_seen) == 2, workers_seen  # both really worked
    with ModelRegistry(direct_url) as registry:
        assert registry.best("bounced", "add") is not None


def test_workers_starting_together_create_optunas_tables_behind_pgbouncer(
    direct_url: str, start_together: StartTogether
) -> None:
    # Racers on a fresh database: a loser's failed commit may come wrapped in Optuna's
    # StorageInternalError, and is retried like any lost race. Creating the tables takes 2
    # connections at once, so the pool holds 2 per racer (docs/deployment.md's sizing).
    from benchmarks.pgbouncer import pgbouncer_in_front_of as bouncer

    with bouncer(direct_url, pool_size=8) as url:
        results = start_together([["-c", OPEN_OPTUNA_STORAGE, url] for _ in range(4)])
    assert results == [True] * 4
    assert_optuna_tables_stamped_once(direct_url)


@pytest.mark.timeout(120)
def test_pgbouncer_keeps_answering_after_hundreds_of_logins(bouncer_url: str) -> None:
    """PgBouncer logs every login and logout to stderr too. Its runner once sent that to a
    pipe nobody read: after some 400 lines (64 KiB) PgBouncer froze in the write and every
    client behind it waited forever (the 64-worker scale benchmark looked deadlocked)."""
    engine = sqlalchemy.create_engine(bouncer_url, poolclass=sqlalchemy.NullPool)
    try:
        for _ in range(600):  # each login + logout logs about 300 bytes
            with engine.connect() as connection:
                assert connection.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
