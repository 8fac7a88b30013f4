"""A worker holds at most 2 server connections at once, whatever it does (one engine)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import optuna
import pytest
import sqlalchemy
from _servers import OPEN_OPTUNA_STORAGE, admin_url, assert_optuna_tables_stamped_once
from conftest import StartTogether
from optuna.trial import TrialState

from benchmarks.scale import CAMPAIGN, LinearTrainer, campaign_config
from storage import Database
from sweep.search.campaign import Campaign


@pytest.fixture
def postgresql_url(server_url: str) -> Iterator[str]:
    if not server_url.startswith("postgresql"):
        pytest.skip("pg_stat_activity is PostgreSQL's")
    yield server_url


class _Peak:
    """Polls pg_stat_activity for one database as fast as it answers, on its own connection."""

    def __init__(self, database: str) -> None:
        self.engine = sqlalchemy.create_engine(
            admin_url("postgresql"), poolclass=sqlalchemy.NullPool
        )
        self.database = database
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db")
        with self.engine.connect() as connection:
            while not self._stop.is_set():
                count = connection.execute(query, {"db": self.database}).scalar_one()
                connection.rollback()
                self.peak = max(self.peak, int(count))
                self.samples += 1

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()


@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_a_joining_worker_holds_at_most_two_connections(postgresql_url: str) -> None:
    trainer = LinearTrainer()
    # The whole budget (add's power designs are exact under LinearTrainer from trial 4).
    config = replace(campaign_config(8), stop_when_exact=False)
    with Campaign(config, Database(postgresql_url), trainer):
        pass  # created as `sweep run` creates it before starting its workers
    database = sqlalchemy.engine.make_url(postgresql_url).database or ""
    # Joining (Optuna's storage, the registry, the campaign row), reserving slots under the
    # lock, trials with heartbeats and reports, promotions into the registry.
    with (
        _Peak(database) as peak,
        Campaign.join(Database(postgresql_url), CAMPAIGN, trainer) as campaign,
    ):
        campaign.run()
        studies = list(campaign.studies.values())
        states = [t.state for s in studies for t in s.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 16, states
    assert peak.samples > 50  # the poller really watched
    assert 1 <= peak.peak <= 2, peak.peak


def test_workers_starting_together_create_optunas_tables_once(
    server_url: str, start_together: StartTogether
) -> None:
    # No lock is held across Optuna's table creation on a server; the racers retry.
    results = start_together([["-c", OPEN_OPTUNA_STORAGE, server_url] for _ in range(4)])
    assert results == [True] * 4
    assert_optuna_tables_stamped_once(server_url)


def test_a_lost_creation_race_is_retried_also_when_optuna_wraps_it() -> None:
    """Optuna's `_create_scoped_session` turns a failed commit into its StorageInternalError
    (seen in CI: two workers opening a fresh database through PgBouncer); that is a lost race
    to retry, as SQLAlchemy's own errors are, while anything else is not."""
    from storage import StorageInternalError
    from sweep.search.storage import _lost_a_creation_race

    def wrapped(cause: BaseException) -> StorageInternalError:
        try:
            raise cause
        except BaseException as e:
            error = StorageInternalError("cannot open Optuna's tables")
            error.__cause__ = e
            return error

    commit_failed = optuna.exceptions.StorageInternalError("An exception is raised during commit")
    commit_failed.__cause__ = sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("lost"))
    assert _lost_a_creation_race(wrapped(commit_failed))
    assert _lost_a_creation_race(
        wrapped(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    )
    assert not _lost_a_creation_race(wrapped(ValueError("a newer schema")))
