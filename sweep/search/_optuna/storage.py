"""Optuna's RDB storage, made cheaper per trial and tolerant of a lost database.

A trial writes ~9 parameters, a report per epoch and ~20 user attributes. Optuna commits each
one in its own transaction: ~60 round trips and commits per trial, which on PostgreSQL cost
more than a pruned trial's training (BENCHMARKS.md, section 3). Here those writes are buffered
per trial and written in one transaction, and the campaign's bookkeeping (counts per state,
best value) is one aggregate query instead of a load of every trial.

Optuna's storage contract holds (its own storage test cases run on this class, bare and
wrapped in Optuna's cache, tests/sweep/search/test_optuna_storage_contract.py):

- A write is refused at the call, with Optuna's error, from what this process knows: the trial
  must exist and not be finished (a trial this process has not seen is looked up once), and a
  parameter's distribution must be compatible with the study's first use of the name (looked up
  once per name and study, then known). Only what another process did since (failed the trial as
  stale, stored the name first with another distribution) can still refuse a buffered write.
- Each trial's buffer is separate: it is written before any read of the trial or its study and
  before the trial's state changes. A write refused then costs only that trial's buffer (the
  error is raised by an explicit `flush`, else logged), never another trial's; a lost database
  keeps every buffer for the next try.
- `get_trial` (which `Trial.should_prune` calls every epoch) shows the trial's buffered writes
  without writing them, so pruning does not turn the buffer into a write per epoch.
- It pickles as RDBStorage does (the engine is rebuilt); the buffer is written first, not copied.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import optuna
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.orm
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from sweep.search._optuna.internals import unwrapped_storage
from sweep.search._optuna.reading import read_trial, read_trials, stored_now

_F = TypeVar("_F", bound=Callable[..., Any])

log = logging.getLogger("sweep.search.storage")

# A dropped connection surfaces as SQLAlchemy's errors, or wrapped by Optuna's RDB storage.
DATABASE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.PendingRollbackError,
    optuna.exceptions.StorageInternalError,
)
# What the database refuses about one trial's writes (Optuna's own errors for them): the trial
# is gone, finished, or a parameter's distribution conflicts with the study's.
REFUSALS = (KeyError, UpdateFinishedTrialError, ValueError)


@dataclass
class _Pending:
    """One trial's writes not yet sent, last value per key (as Optuna would have stored)."""

    study_id: int
    # name -> (internal value, distribution, whether the study's first use was read from the
    # database at the call; if not, this write is the first use and is checked again on write)
    params: dict[str, tuple[float, BaseDistribution, bool]] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, str] = field(default_factory=dict)  # key -> JSON text
    beat: bool = False  # the trial's first heartbeat (`first_beat_with_writes`)


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

    def __init__(
        self,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        skip_compatibility_check: bool = False,
        *,
        first_beat_with_writes: bool = False,
        **kwargs: Any,
    ) -> None:
        """`first_beat_with_writes`: a trial's first heartbeat is written with the trial's
        next writes (`record_heartbeat`); for a process whose objective writes each trial's
        parameters as soon as it has suggested them, as the campaign's does."""
        self._init_buffer()
        super().__init__(url, engine_kwargs, True, **kwargs)
        self.skip_compatibility_check = skip_compatibility_check
        self.first_beat_with_writes = first_beat_with_writes
        self._check_schema()

    def _check_schema(self) -> None:
        """Optuna's schema check, one connection at a time.

        Optuna's own (`_VersionManager.check_table_schema_compatibility`) reads the alembic
        revision on a second connection while its first holds a transaction open: a worker
        needs two server connections at once just to start, and workers starting together
        behind a small PgBouncer pool each hold one and wait for another (64 workers behind a
        40-connection pool deadlocked; 3 behind a 2-connection pool failed 1 run in 4).
        Same verdict and message as Optuna's.
        """
        if self.skip_compatibility_check:
            return
        versions = self._version_manager
        current = versions.get_current_version()  # its own connection, closed again
        if current == versions.get_head_version():
            return
        with _create_scoped_session(self.scoped_session) as session:
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

    def _init_buffer(self) -> None:
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.RLock()
        # What this process knows, to refuse a bad write at the call as Optuna's storage does:
        # running (or waiting) trial id -> (study id, state), a finished or unknown trial is
        # looked up; and per study the first distribution of each name (with whether it was
        # read from the database, or is this process' own first use).
        self._trials_known: dict[int, tuple[int, TrialState]] = {}
        self._first_use: dict[int, dict[str, tuple[BaseDistribution, bool]]] = {}
        self._beaten: set[int] = set()  # running trials whose first beat was buffered
        self._on_start = threading.local()  # `when_trial_starts`' callback, per thread

    def __getstate__(self) -> dict[Any, Any]:
        """As RDBStorage (the engine is rebuilt on load); buffered writes are written first,
        so a copy never writes them twice."""
        self._flush_quietly(None)
        state = super().__getstate__()
        for name in (
            "_pending", "_pending_lock", "_trials_known", "_first_use", "_beaten", "_on_start"
        ):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        self._init_buffer()
        skip = state.get("skip_compatibility_check", False)
        super().__setstate__({**state, "skip_compatibility_check": True})
        self.skip_compatibility_check = skip
        self._check_schema()

    # -- buffered writes, checked at the call -------------------------------------------------

    def _updatable_study(self, trial_id: int) -> int:
        """The trial's study id, if the trial may be written; Optuna's errors otherwise."""
        known = self._trials_known.get(trial_id)
        if known is None:
            trial = models.TrialModel
            with _create_scoped_session(self.scoped_session) as session:
                row = (
                    session.query(trial.study_id, trial.state)
                    .filter(trial.trial_id == trial_id)
                    .one_or_none()
                )
            if row is None:
                raise KeyError(models.NOT_FOUND_MSG)
            study_id: Any = row[0]  # (typed optional by SQLAlchemy 2.1; the column is NOT NULL)
            known = (int(study_id), TrialState(row[1]))
            if not known[1].is_finished():
                self._trials_known[trial_id] = known
        self.check_trial_is_updatable(trial_id, known[1])
        return known[0]

    def _buffer(self, trial_id: int, study_id: int) -> _Pending:
        pending = self._pending.get(trial_id)
        if pending is None:
            pending = self._pending[trial_id] = _Pending(study_id)
        return pending

    def _check_first_use(
        self,
        study_id: int,
        name: str,
        distribution: BaseDistribution,
        previous: BaseDistribution | None,
    ) -> bool:
        """Refuse a distribution incompatible with the study's first use of `name` (read from
        the database once, then known); True if that first use is in the database."""
        uses = self._first_use.setdefault(study_id, {})
        use = uses.get(name) or self._stored_first_use(study_id, name)
        first, stored = use or (distribution, False)
        distributions.check_distribution_compatibility(first, distribution)
        if previous is not None:  # what Optuna's cache knows; never instead of the above
            distributions.check_distribution_compatibility(previous, distribution)
        uses[name] = (first, stored)
        return stored

    def _stored_first_use(
        self, study_id: int, name: str, session: sqlalchemy.orm.Session | None = None
    ) -> tuple[BaseDistribution, bool] | None:
        def query(session: sqlalchemy.orm.Session) -> Any:
            return (
                session.query(models.TrialParamModel.distribution_json)
                .join(models.TrialModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialParamModel.param_name == name)
                .first()
            )

        if session is not None:
            record = query(session)
        else:
            with _create_scoped_session(self.scoped_session) as own:
                record = query(own)
        if record is None:
            return None
        return distributions.json_to_distribution(record[0]), True

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
            study_id = self._updatable_study(trial_id)  # state first, as Optuna checks
            stored = self._check_first_use(
                study_id, param_name, distribution, previous_distribution
            )
            self._buffer(trial_id, study_id).params[param_name] = (
                param_value_internal,
                distribution,
                stored,
            )

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        with self._pending_lock:
            study_id = self._updatable_study(trial_id)
            self._buffer(trial_id, study_id).intermediate[step] = float(intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        text = json.dumps(value)  # a value JSON cannot hold is refused here, as by Optuna
        with self._pending_lock:
            study_id = self._updatable_study(trial_id)
            self._buffer(trial_id, study_id).user_attrs[key] = text

    # -- writing the buffers --------------------------------------------------------------------

    def flush(self, trial_id: int | None = None) -> None:
        """Write one trial's buffered values (every trial's, without `trial_id`) now.

        Raises:
            KeyError, UpdateFinishedTrialError, ValueError: the database refused a trial's
                writes (another process finished the trial, or stored a parameter name first
                with another distribution); that trial's buffer is dropped, the others are
                written.
            DATABASE_ERRORS: the database failed; every buffer is kept for the next try.
        """
        refused = self._write_buffers(None if trial_id is None else (trial_id,))
        if refused:
            raise refused[0][1]

    def _flush_quietly(self, trial_ids: Iterable[int] | None) -> None:
        """Before a read or a state change: a refused buffer is logged, not raised, so an
        unrelated call never fails for another write (and Optuna's loop still ends the trial)."""
        for trial_id, error in self._write_buffers(trial_ids):
            log.warning(
                "writes to trial id %d dropped, the database refused them: %r", trial_id, error
            )

    def _write_buffers(
        self, trial_ids: Iterable[int] | None
    ) -> list[tuple[int, Exception]]:
        """Each trial's buffer in its own transaction; the refused ones are dropped."""
        refused: list[tuple[int, Exception]] = []
        with self._pending_lock:
            if not self._pending:
                return refused
            ids = list(self._pending) if trial_ids is None else list(trial_ids)
            for trial_id in ids:
                writes = self._pending.get(trial_id)
                if writes is None:
                    continue
                try:
                    self._write(trial_id, writes)
                except DATABASE_ERRORS:
                    raise  # the database, not these writes: every buffer waits for the next try
                except Exception as error:  # refused (REFUSALS, or a row the database rejects)
                    self._drop(trial_id)
                    refused.append((trial_id, error))
                    continue
                del self._pending[trial_id]
                uses = self._first_use.get(writes.study_id, {})
                for name, (_, _, stored) in writes.params.items():
                    if not stored and name in uses and not uses[name][1]:
                        uses[name] = (uses[name][0], True)
        return refused

    def _drop(self, trial_id: int) -> None:
        """Forget a trial's buffer, and the first uses it would have stored (the database
        decides them again), and its state (it is read again at the next write)."""
        writes = self._pending.pop(trial_id, None)
        if writes is None:
            return
        self._trials_known.pop(trial_id, None)
        uses = self._first_use.get(writes.study_id, {})
        for name, (_, _, stored) in writes.params.items():
            if not stored and name in uses and not uses[name][1]:
                del uses[name]

    def _write(self, trial_id: int, writes: _Pending) -> None:
        """The buffer as a handful of statements: the trial's state is checked once (as Optuna
        checks it per write), each table gets one DELETE of the keys and one multi-row INSERT.
        """
        with _create_scoped_session(self.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            state: Any = trial.state  # (Optuna's model is typed Mapped[] on some versions)
            if TrialState(state).is_finished():  # Optuna's check and message
                raise UpdateFinishedTrialError(
                    f"Trial#{trial.number} has already finished and can not be updated."
                )
            params = []
            for name, (value, distribution, stored) in writes.params.items():
                if not stored:  # our first use: another process may have stored one since
                    first = self._stored_first_use(writes.study_id, name, session)
                    if first is not None:
                        distributions.check_distribution_compatibility(first[0], distribution)
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
                stored_value, kind = (
                    models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                )
                intermediate.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": stored_value,
                        "intermediate_value_type": kind,
                    }
                )
            attrs = [
                {"trial_id": trial_id, "key": key, "value_json": text}
                for key, text in writes.user_attrs.items()
            ]
            _replace(session, models.TrialParamModel, "param_name", params)
            _replace(session, models.TrialIntermediateValueModel, "step", intermediate)
            _replace(session, models.TrialUserAttributeModel, "key", attrs)
            if writes.beat:
                _beat(session, trial_id)

    # -- trial lifecycle and reads ----------------------------------------------------------

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        trial = super()._create_new_trial(study_id, template_trial)
        if not trial.state.is_finished():
            with self._pending_lock:
                self._trials_known[trial._trial_id] = (study_id, trial.state)
        if trial.state == TrialState.RUNNING:
            self._trial_started()
        return trial

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._flush_quietly((trial_id,))  # the trial's rows before its end, for every reader
        with self._pending_lock:
            try:
                changed = super().set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                self._trials_known.pop(trial_id, None)
                self._beaten.discard(trial_id)
                raise
            known = self._trials_known.get(trial_id)
            if changed and known is not None and not state.is_finished():
                self._trials_known[trial_id] = (known[0], state)
            else:  # finished (a later write looks it up, and is refused), or another
                # process took the WAITING trial first: only running trials are remembered
                self._trials_known.pop(trial_id, None)
                self._beaten.discard(trial_id)
        if changed and state == TrialState.RUNNING:  # a WAITING trial taken (`Study.ask`)
            self._trial_started()
        return changed

    @contextlib.contextmanager
    def when_trial_starts(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call `callback` once, the moment this thread's next trial is RUNNING in the
        database (created, or taken from the WAITING queue), within the block.

        The campaign's slot lock must cover the trial's creation and no more: after it,
        `Study.ask` reads the trial back and `Study.optimize` starts its heartbeat, and every
        other worker of the study waits for the lock meanwhile. (Optuna 5 samples relative
        parameters lazily, at the first suggest, so sampling is outside the lock either way.)
        """
        self._on_start.callback = callback
        try:
            yield
        finally:
            self._on_start.callback = None

    def _trial_started(self) -> None:
        callback = getattr(self._on_start, "callback", None)
        if callback is not None:
            self._on_start.callback = None
            callback()

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """The trial as stored, with its buffered writes shown on top (not written: Optuna's
        pruning reads the trial every epoch)."""
        with self._pending_lock:
            with _create_scoped_session(self.scoped_session) as session:
                found = read_trial(session, trial_id)
            if found is None:
                raise KeyError(models.NOT_FOUND_MSG)
            trial = found
            self._learn_state(trial_id, trial.state)
            writes = self._pending.get(trial_id)
            if writes is None:
                return trial
            if trial.state.is_finished():  # finished elsewhere: they can never be written
                self._drop(trial_id)
                log.warning("writes to trial %d dropped: it was finished elsewhere", trial.number)
                return trial
            return _with_writes(trial, writes)

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        """The study's trials as stored, each with its buffered writes shown on top (the
        sampler's read at each trial's start, Optuna's pruners' read every epoch)."""
        with self._pending_lock:
            with _create_scoped_session(self.scoped_session) as session:
                trials = read_trials(
                    session, study_id, states, included_trial_ids, trial_id_greater_than
                )
            known = self._trials_known
            for trial in trials:  # e.g. a trial another worker failed as stale
                if trial._trial_id in known:
                    self._learn_state(trial._trial_id, trial.state)
            if not self._pending:
                return trials
            shown = []
            for trial in trials:
                writes = self._pending.get(trial._trial_id)
                if writes is not None and not trial.state.is_finished():
                    trial = _with_writes(trial, writes)
                shown.append(trial)
            return shown

    def _learn_state(self, trial_id: int, state: TrialState) -> None:
        """Remember a state read from the database: a trial another process finished (as
        stale, say) then refuses this process' next write at the call, as Optuna's would."""
        with self._pending_lock:
            known = self._trials_known.get(trial_id)
            if known is not None and known[1] != state:
                if state.is_finished():  # the next write looks it up, and is refused
                    del self._trials_known[trial_id]
                else:
                    self._trials_known[trial_id] = (known[0], state)

    def delete_study(self, study_id: int) -> None:
        with self._pending_lock:
            for trial_id in [t for t, p in self._pending.items() if p.study_id == study_id]:
                del self._pending[trial_id]
            super().delete_study(study_id)
            # Ids may be reused by the database: forget the study's trials and names.
            self._first_use.pop(study_id, None)
            for trial_id in [t for t, k in self._trials_known.items() if k[0] == study_id]:
                del self._trials_known[trial_id]

    def summary(self, study_id: int) -> StudySummary:
        """Trial counts per state, the newest trial's state and the best finite value (no
        buffered value counts here: states and values are written at once)."""
        trial = models.TrialModel
        value = models.TrialValueModel
        with _create_scoped_session(self.scoped_session) as session:
            states = self._state_counts(session, study_id)
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
        return StudySummary(states, last, best_value)

    def state_counts(self, study_id: int) -> dict[TrialState, int]:
        """Trial counts per state alone: one query (a slot reservation reads it under the
        study's lock, where every query is a wait for the study's other workers)."""
        with _create_scoped_session(self.scoped_session) as session:
            return self._state_counts(session, study_id)

    @staticmethod
    def _state_counts(session: sqlalchemy.orm.Session, study_id: int) -> dict[TrialState, int]:
        trial = models.TrialModel
        rows = (
            session.query(trial.state, sqlalchemy.func.count(trial.trial_id))
            .filter(trial.study_id == study_id)
            .group_by(trial.state)
            .all()
        )
        return {TrialState(state): int(n) for state, n in rows}

    # -- heartbeat ------------------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna beats from a thread that dies, with a traceback on stderr, at the first
        failed write; the trial would then turn stale and be failed by another worker even if
        the database came back. A missed beat is simply tried again at the next interval.

        With `first_beat_with_writes`, a trial's first beat (Optuna's thread beats as the
        trial starts) goes into the trial's buffer and is written in the transaction of its
        next writes, milliseconds later for the campaign's objective, instead of two more
        transactions from a second thread: in a sweep of 40 ms trials that beat cost 10-19%
        of the trials per minute (BENCHMARKS.md, section 13). Until it is written the trial
        has no beat, and a trial that never beat is failed only twice the grace period after
        its start (`_get_stale_trial_ids`); the thread's next beat is written as always.
        """
        if self.first_beat_with_writes:
            with self._pending_lock:
                known = self._trials_known.get(trial_id)
                if known is not None and trial_id not in self._beaten:
                    self._beaten.add(trial_id)
                    self._buffer(trial_id, known[0]).beat = True
                    return
        with contextlib.suppress(*DATABASE_ERRORS):
            super().record_heartbeat(trial_id)
            # The beat's other use: learn that another worker failed this trial as stale,
            # so the objective's next write is refused at the call, as Optuna's would be.
            trial = models.TrialModel
            with _create_scoped_session(self.scoped_session) as session:
                state = (
                    session.query(trial.state).filter(trial.trial_id == trial_id).scalar()
                )
            if state is not None:
                self._learn_state(trial_id, TrialState(state))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, and RUNNING trials that never had a heartbeat, started more
        than twice the grace period ago.

        Optuna never fails a trial without a heartbeat, yet a trial can be left RUNNING
        before its first beat: its worker killed between creating the trial and starting the
        heartbeat thread, or a connection lost while `Study.ask` read the new trial back (seen
        under `pg_terminate_backend`: the budget then waited forever for a trial nobody ran).
        Twice the grace period leaves room for clocks of different hosts (a trial's start is
        the client's clock).
        """
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if not grace:
            return stale
        trial = models.TrialModel.__table__
        beats = models.TrialHeartbeatModel.__table__
        before = stored_now() - datetime.timedelta(seconds=2 * grace)
        with _create_scoped_session(self.scoped_session) as session:
            never_beat = session.execute(
                sqlalchemy.select(trial.c.trial_id).where(
                    trial.c.study_id == study_id,
                    trial.c.state == TrialState.RUNNING,
                    trial.c.datetime_start < before,
                    ~sqlalchemy.exists().where(beats.c.trial_id == trial.c.trial_id),
                )
            ).scalars().all()
        return stale + [int(i) for i in never_beat if i not in stale]


def _with_writes(trial: FrozenTrial, writes: _Pending) -> FrozenTrial:
    """A copy of `trial` as it will be once `writes` are stored."""
    params = dict(trial.params)
    dists = dict(trial.distributions)
    for name, (value, distribution, _) in writes.params.items():
        params[name] = distribution.to_external_repr(value)
        dists[name] = distribution
    user_attrs = dict(trial.user_attrs)
    user_attrs.update((key, json.loads(text)) for key, text in writes.user_attrs.items())
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=trial.values,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=params,
        distributions=dists,
        user_attrs=user_attrs,
        system_attrs=trial.system_attrs,
        intermediate_values={**trial.intermediate_values, **writes.intermediate},
        trial_id=trial._trial_id,
    )


def _beat(session: sqlalchemy.orm.Session, trial_id: int) -> None:
    """`RDBStorage.record_heartbeat`, in the caller's transaction."""
    heartbeat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
    if heartbeat is None:
        session.add(models.TrialHeartbeatModel(trial_id=trial_id))
    else:
        heartbeat.heartbeat = session.execute(sqlalchemy.func.now()).scalar_one()


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
    """Every buffer first: for calls that read or write beyond one trial."""

    def wrapper(self: SweepStorage, *args: Any, **kwargs: Any) -> Any:
        self._flush_quietly(None)
        return method(self, *args, **kwargs)

    return _named(wrapper, method)


def _flushing_trial(method: _F) -> _F:
    """The trial's own buffer first (its first argument is the trial id)."""

    def wrapper(self: SweepStorage, trial_id: int, *args: Any, **kwargs: Any) -> Any:
        self._flush_quietly((trial_id,))
        return method(self, trial_id, *args, **kwargs)

    return _named(wrapper, method)


def _named(wrapper: Callable[..., Any], method: _F) -> _F:
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
# Defined above: a trial's state change (its own buffer first), the reads of trials (each
# trial's buffer shown on top), trial creation (remembered, to check writes at the call), a
# study's deletion.
OWN: frozenset[str] = frozenset(
    {"set_trial_state_values", "get_trial", "_get_trials", "_create_new_trial", "delete_study"}
)
# Calls about one trial's data write its buffer first.
FLUSH_TRIAL: tuple[str, ...] = (
    "get_trial_param",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "set_trial_system_attr",
)
# Every other storage call writes every buffer first (the heartbeat thread's calls excepted:
# they touch only the heartbeat table, and must not write from another thread).
FLUSH_FIRST: tuple[str, ...] = (
    "create_new_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
)
# Calls that neither read nor write trial data (configuration, schema versions, helpers used
# inside the methods above, the trial ids and numbers that never change, the heartbeat
# thread's own table).
UNBUFFERED: frozenset[str] = frozenset(
    {
        "create_new_trial",  # through `_create_new_trial`
        "get_all_trials",  # through `_get_trials`
        "get_best_trial",  # through `get_trial`
        # States and values only, never buffered:
        "get_n_trials",
        "_get_best_trial_id",
        "_get_stale_trial_ids",
        "get_trial_id_from_study_id_trial_number",
        "get_trial_number_from_id",
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
for _name in FLUSH_TRIAL:
    setattr(SweepStorage, _name, _flushing_trial(getattr(optuna.storages.RDBStorage, _name)))


def backend_of(study: optuna.Study) -> SweepStorage | None:
    """The SweepStorage under a study (Optuna wraps RDB storages in a cache), if it has one."""
    storage = unwrapped_storage(study)
    return storage if isinstance(storage, SweepStorage) else None
