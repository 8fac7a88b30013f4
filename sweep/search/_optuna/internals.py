"""Small accessors for Optuna's private attributes, so the rest of the code never spells them,
and Optuna's schema check made on one connection at a time.

`study._storage`, `study._study_id`, `FrozenTrial._trial_id` and the ``artifacts:<id>`` system
attribute that `optuna.artifacts.upload_artifact` writes (and optuna-dashboard reads).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select
from sqlalchemy.engine import Connection

__all__ = [
    "ARTIFACT_ATTR_PREFIX",
    "check_table_schema",
    "find_trial",
    "record_artifact",
    "still_running",
    "storage_of",
    "study_id",
    "trial_id",
    "unwrapped_storage",
]

ARTIFACT_ATTR_PREFIX = "artifacts:"


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (Optuna wraps RDB storages in a cache)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def unwrapped_storage(study: optuna.Study) -> Any:
    """The storage under Optuna's `_CachedStorage`, if it wraps one; else the study's own."""
    storage: Any = study._storage
    return getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    return int(trial._trial_id)


def find_trial(study: optuna.Study, number: int) -> FrozenTrial | None:
    """Trial `number` of `study`, read fresh from the storage; None if there is none."""
    storage = storage_of(study)
    try:
        trial = storage.get_trial_id_from_study_id_trial_number(study_id(study), number)
    except KeyError:
        return None
    return storage.get_trial(trial)


def record_artifact(
    target: FrozenTrial | optuna.Study,
    storage: optuna.storages.BaseStorage,
    *,
    artifact_id: str,
    filename: str,
    mimetype: str,
    encoding: str | None,
) -> None:
    """Record an artifact whose file is already in the store, in Optuna's own format.

    `optuna.artifacts.upload_artifact` records first and writes the file after, so a disk that
    fills up mid-write leaves the dashboard listing half a file; the caller here writes the
    whole file first. The record's format is what `get_all_artifact_meta` and optuna-dashboard
    read.
    """
    meta = json.dumps(
        {
            "artifact_id": artifact_id,
            "filename": filename,
            "mimetype": mimetype,
            "encoding": encoding,
        }
    )
    key = f"{ARTIFACT_ATTR_PREFIX}{artifact_id}"
    if isinstance(target, optuna.Study):
        storage.set_study_system_attr(study_id(target), key, meta)
    else:
        storage.set_trial_system_attr(trial_id(target), key, meta)


def still_running(trial: optuna.Trial) -> Callable[[Connection], str | None]:
    """A promotion guard: the trial must still be RUNNING when the promotion commits.

    Read in the promotion's own transaction with a share lock on Optuna's trial row, so a
    worker that fails the trial as stale meanwhile (its UPDATE needs that row) waits for the
    commit; a trial already failed (its worker was stopped, the retry runs elsewhere) is
    refused. Optuna's own table definition, so the column types are Optuna's.
    """
    table = models.TrialModel.__table__
    trial_id, number = trial._trial_id, trial.number

    def guard(connection: Connection) -> str | None:
        query = select(table.c.state).where(table.c.trial_id == trial_id)
        if connection.dialect.name != "sqlite":  # SQLite's write lock is held already
            query = query.with_for_update(read=True)
        state = connection.execute(query).scalar()
        if state is None:
            return f"trial {number} no longer exists"
        state = state if isinstance(state, TrialState) else TrialState[str(state)]
        if state != TrialState.RUNNING:
            return (
                f"trial {number} is {state.name} (finished by another worker, e.g. failed "
                "as stale while this one was stopped); its model is not promoted"
            )
        return None

    return guard


def check_table_schema(storage: optuna.storages.RDBStorage) -> None:
    """Optuna's schema check, one connection at a time.

    Optuna's own (`_VersionManager.check_table_schema_compatibility`) reads the alembic
    revision on a second connection while its first holds a transaction open: a worker
    needs two server connections at once just to start, and workers starting together
    behind a small PgBouncer pool each hold one and wait for another (64 workers behind a
    40-connection pool deadlocked; 3 behind a 2-connection pool failed 1 run in 4).
    Same verdict and message as Optuna's.
    """
    versions = storage._version_manager
    current = versions.get_current_version()  # its own connection, closed again
    if current == versions.get_head_version():
        return
    with _create_scoped_session(storage.scoped_session) as session:
        info = models.VersionInfoModel.find(session)
        library_version = info.library_version if info is not None else "unknown"
    message = (
        f"The runtime optuna version {optuna.__version__} is no longer compatible with "
        f"the table schema (set up by optuna {library_version}). "
    )
    if current in versions.get_all_versions():
        message += (
            "Please execute `$ optuna storage upgrade --storage $STORAGE_URL` "
            "for upgrading the storage."
        )
    else:
        message += (
            "Please try updating optuna to the latest version by `$ pip install -U optuna`."
        )
    raise RuntimeError(message)
