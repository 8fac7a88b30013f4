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
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from typing import Any

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

from sweep.search._optuna.buffer import (
    FLUSH_FIRST,
    FLUSH_TRIAL,
    Pending,
    flushing,
    flushing_trial,
    with_writes,
    write_pending,
)
from sweep.search._optuna.internals import check_table_schema, unwrapped_storage
from sweep.search._optuna.reading import (
    StudySummary,
    first_distribution,
    never_beaten,
    read_trial,
    read_trials,
    state_counts,
    stored_now,
    study_summary,
)

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
        if not self.skip_compatibility_check:
            check_table_schema(self)

    def _init_buffer(self) -> None:
        self._pending: dict[int, Pending] = {}
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
        self.flush_quietly(None)
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

    def _buffer(self, trial_id: int, study_id: int) -> Pending:
        pending = self._pending.get(trial_id)
        if pending is None:
            pending = self._pending[trial_id] = Pending(study_id)
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
        if session is None:
            with _create_scoped_session(self.scoped_session) as own:
                return self._stored_first_use(study_id, name, own)
        stored = first_distribution(session, study_id, name)
        return None if stored is None else (stored, True)

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

    def flush_quietly(self, trial_ids: Iterable[int] | None) -> None:
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
                    with _create_scoped_session(self.scoped_session) as session:
                        write_pending(session, trial_id, writes, self._stored_first_use)
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
        self.flush_quietly((trial_id,))  # the trial's rows before its end, for every reader
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
            return with_writes(trial, writes)

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
                    trial = with_writes(trial, writes)
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
        with _create_scoped_session(self.scoped_session) as session:
            return study_summary(session, study_id)

    def state_counts(self, study_id: int) -> dict[TrialState, int]:
        """Trial counts per state alone: one query (a slot reservation reads it under the
        study's lock, where every query is a wait for the study's other workers)."""
        with _create_scoped_session(self.scoped_session) as session:
            return state_counts(session, study_id)

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
        before = stored_now() - datetime.timedelta(seconds=2 * grace)
        with _create_scoped_session(self.scoped_session) as session:
            never_beat = never_beaten(session, study_id, before)
        return stale + [int(i) for i in never_beat if i not in stale]


for _name in FLUSH_FIRST:
    setattr(SweepStorage, _name, flushing(getattr(optuna.storages.RDBStorage, _name)))
for _name in FLUSH_TRIAL:
    setattr(SweepStorage, _name, flushing_trial(getattr(optuna.storages.RDBStorage, _name)))


def backend_of(study: optuna.Study) -> SweepStorage | None:
    """The SweepStorage under a study (Optuna wraps RDB storages in a cache), if it has one."""
    storage = unwrapped_storage(study)
    return storage if isinstance(storage, SweepStorage) else None
