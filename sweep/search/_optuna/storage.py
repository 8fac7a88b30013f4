"""Optuna's RDB storage, made cheaper per trial and tolerant of a lost database.

A trial writes ~9 parameters, a report per epoch and ~20 user attributes. Optuna commits each
one in its own transaction: ~60 round trips and commits per trial, which on PostgreSQL cost
more than a pruned trial's training (BENCHMARKS.md, section 3). Here those writes are buffered
per trial and written in one transaction before anything else touches the storage, and the
campaign's bookkeeping (counts per state, best value) is one aggregate query instead of a load
of every trial. Nothing is reordered: any other call (a read, a state change, another trial's
write) first writes the buffer, so every reader, in this process or another, sees the same
rows it would have seen before, only committed together. A trial that dies before its buffer
is written loses those writes; it ends FAIL and is retried anyway.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import optuna
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.orm
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from sweep.search._optuna.internals import unwrapped_storage

_F = TypeVar("_F", bound=Callable[..., Any])

# A dropped connection surfaces as SQLAlchemy's errors, or wrapped by Optuna's RDB storage.
DATABASE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.PendingRollbackError,
    optuna.exceptions.StorageInternalError,
)


@dataclass
class _Pending:
    """One trial's writes not yet sent, last value per key (as Optuna would have stored)."""

    params: dict[str, tuple[float, BaseDistribution, BaseDistribution | None]] = field(
        default_factory=dict
    )
    intermediate: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySummary:
    """What the campaign loop needs after each trial, from one aggregate query."""

    states: dict[TrialState, int]
    last_state: TrialState | None
    best_value: float | None  # lowest finite first objective among COMPLETE trials

    def count(self, *states: TrialState) -> int:
        return sum(self.states.get(state, 0) for state in states)


class SweepStorage(optuna.storages.RDBStorage):
    """RDBStorage with buffered per-trial writes, a summary query and a fault-tolerant beat."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    # -- buffered writes ------------------------------------------------------------------

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        # Optuna's cache layer calls this private method directly, as `set_trial_param` does.
        with self._pending_lock:
            self._pending.setdefault(trial_id, _Pending()).params[param_name] = (
                param_value_internal,
                distribution,
                previous_distribution,
            )

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        with self._pending_lock:
            self._pending.setdefault(trial_id, _Pending()).intermediate[step] = (
                intermediate_value
            )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._pending_lock:
            self._pending.setdefault(trial_id, _Pending()).user_attrs[key] = value

    def flush(self) -> None:
        """Write every buffered value, one transaction per trial.

        On failure the buffer is dropped, as the single writes would have been lost: the
        error propagates and the trial in flight ends FAIL and is retried.
        """
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            for trial_id, writes in pending.items():
                self._write(trial_id, writes)

    def _write(self, trial_id: int, writes: _Pending) -> None:
        """The buffer as a handful of statements: the trial's state is checked once (as Optuna
        checks it per write), each table gets one DELETE of the keys and one multi-row INSERT.
        """
        with _create_scoped_session(self.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, cast(TrialState, trial.state))
            params = []
            for name, (value, distribution, previous) in writes.params.items():
                if previous is None:  # as Optuna: the study's first use of the name decides
                    record = (
                        session.query(models.TrialParamModel.distribution_json)
                        .join(models.TrialModel)
                        .filter(models.TrialModel.study_id == trial.study_id)
                        .filter(models.TrialParamModel.param_name == name)
                        .first()
                    )
                    if record is not None:
                        previous = distributions.json_to_distribution(record[0])
                if previous is not None:
                    distributions.check_distribution_compatibility(previous, distribution)
                params.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": value,
                        "distribution_json": distributions.distribution_to_json(distribution),
                    }
                )
            intermediate = []
            for step, value in writes.intermediate.items():
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                    value
                )
                intermediate.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": stored,
                        "intermediate_value_type": kind,
                    }
                )
            attrs = [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in writes.user_attrs.items()
            ]
            _replace(session, models.TrialParamModel, "param_name", params)
            _replace(session, models.TrialIntermediateValueModel, "step", intermediate)
            _replace(session, models.TrialUserAttributeModel, "key", attrs)

    # -- reads ----------------------------------------------------------------------------

    def summary(self, study_id: int) -> StudySummary:
        """Trial counts per state, the newest trial's state and the best finite value."""
        self.flush()
        trial = models.TrialModel
        value = models.TrialValueModel
        with _create_scoped_session(self.scoped_session) as session:
            rows = (
                session.query(trial.state, sqlalchemy.func.count(trial.trial_id))
                .filter(trial.study_id == study_id)
                .group_by(trial.state)
                .all()
            )
            last = (
                session.query(trial.state)
                .filter(trial.study_id == study_id)
                .order_by(trial.number.desc())
                .limit(1)
                .scalar()
            )
            best = (
                session.query(sqlalchemy.func.min(value.value))
                .join(trial, value.trial_id == trial.trial_id)
                .filter(
                    trial.study_id == study_id,
                    trial.state == TrialState.COMPLETE,
                    value.objective == 0,
                    value.value_type == models.TrialValueModel.TrialValueType.FINITE,
                )
                .scalar()
            )
        best_value = float(best) if best is not None and math.isfinite(best) else None
        return StudySummary({state: int(n) for state, n in rows}, last, best_value)

    # -- heartbeat ------------------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna beats from a thread that dies, with a traceback on stderr, at the first
        failed write; the trial would then turn stale and be failed by another worker even if
        the database came back. A missed beat is simply tried again at the next interval."""
        with contextlib.suppress(*DATABASE_ERRORS):
            super().record_heartbeat(trial_id)


def _replace(
    session: sqlalchemy.orm.Session, model: Any, key: str, rows: list[dict[str, Any]]
) -> None:
    """Delete the trial's rows with these keys, insert the new ones: an upsert in two
    statements on every database."""
    if not rows:
        return
    table = model.__table__
    session.execute(
        sqlalchemy.delete(table).where(
            table.c.trial_id == rows[0]["trial_id"],
            table.c[key].in_([row[key] for row in rows]),
        )
    )
    session.execute(sqlalchemy.insert(table), rows)


def _flushing(method: _F) -> _F:
    def wrapper(self: SweepStorage, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return method(self, *args, **kwargs)

    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = f"SweepStorage.{method.__name__}"
    wrapper.__doc__ = method.__doc__
    return cast(_F, wrapper)


# How each of RDBStorage's methods treats the buffer. Every method Optuna's RDBStorage has must
# be in exactly one of these (tests/sweep/search/test_optuna_storage.py): a method a new Optuna
# release adds would otherwise read or write around the buffer.
BUFFERED: frozenset[str] = frozenset(
    {"set_trial_param", "_set_trial_param", "set_trial_intermediate_value", "set_trial_user_attr"}
)
# Every other storage call writes the buffer first (the heartbeat thread's calls excepted:
# they touch only the heartbeat table, and must not write from another thread).
FLUSH_FIRST: tuple[str, ...] = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "_create_new_trial",
    "get_trial_param",
    "get_trial_params",
    "set_trial_state_values",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "_get_trials",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)
# Calls that neither read nor write trial data (configuration, schema versions, helpers used
# inside the methods above, the heartbeat thread's own table).
UNBUFFERED: frozenset[str] = frozenset(
    {
        "_build_frozen_trial_from_trial_model",
        "_create_unique_study_name",
        "_fill_storage_url_template",
        "_get_prepared_new_trial",
        "_set_default_engine_kwargs_for_mysql",
        "_set_trial_attr_without_commit",
        "_set_trial_intermediate_value_without_commit",
        "_set_trial_param_without_commit",
        "_set_trial_value_without_commit",
        "check_trial_is_updatable",
        "get_all_versions",
        "get_current_version",
        "get_head_version",
        "upgrade",
        "remove_session",
        "record_heartbeat",
        "get_heartbeat_interval",
        "get_failed_trial_callback",
        "get_heartbeat_stale_trial_callback",
    }
)
for _name in FLUSH_FIRST:
    setattr(SweepStorage, _name, _flushing(getattr(optuna.storages.RDBStorage, _name)))


def backend_of(study: optuna.Study) -> SweepStorage | None:
    """The SweepStorage under a study (Optuna wraps RDB storages in a cache), if it has one."""
    storage = unwrapped_storage(study)
    return storage if isinstance(storage, SweepStorage) else None
