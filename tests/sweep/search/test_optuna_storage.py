"""The buffered Optuna storage: same rows as Optuna's, fewer transactions."""

from __future__ import annotations

import datetime
import math
import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from storage import Database
from sweep.search._optuna.internals import trial_id
from sweep.search._optuna.reading import read_trials, stored_now
from sweep.search.budget import best_value, progress, trial_counts
from sweep.search.storage import SweepStorage, backend_of, optuna_storage

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def open_optuna_storage(url: str) -> SweepStorage:
    """The storage as a worker opens it: on a database handle of its own."""
    return optuna_storage(Database(url))


def _study(url: str) -> tuple[optuna.Study, SweepStorage]:
    storage = open_optuna_storage(url)
    assert isinstance(storage, SweepStorage)
    return optuna.create_study(storage=storage, study_name="buffered"), storage


def _fresh_view(url: str) -> optuna.Study:
    """What another worker sees: its own storage, nothing shared with the writer."""
    return optuna.load_study(study_name="buffered", storage=url)


def test_writes_wait_for_a_flush_then_land_in_one_piece(storage_url: str) -> None:
    study, storage = _study(storage_url)
    assert backend_of(study) is storage
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("note", {"nested": [1, 2]})
    trial.report(0.5, 0)
    trial.report(0.25, 1)
    (other,) = _fresh_view(storage_url).get_trials()
    assert other.params == {} and other.user_attrs == {} and other.intermediate_values == {}

    storage.flush()
    (other,) = _fresh_view(storage_url).get_trials()
    assert other.params == {"x": x}
    assert other.user_attrs == {"note": {"nested": [1, 2]}}
    assert other.intermediate_values == {0: 0.5, 1: 0.25}


def test_any_other_call_writes_the_buffer_first(storage_url: str) -> None:
    study, _ = _study(storage_url)
    trial = study.ask()
    trial.set_user_attr("seen", True)
    study.tell(trial, 1.0)  # a state change: the attribute must be stored before it
    (other,) = _fresh_view(storage_url).get_trials()
    assert other.state == TrialState.COMPLETE and other.user_attrs == {"seen": True}


def test_summary_counts_states_and_finds_the_best_finite_value(storage_url: str) -> None:
    study, storage = _study(storage_url)
    for value in (3.0, 1.5, math.inf):
        study.tell(study.ask(), value)
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()  # left RUNNING
    summary = storage.summary(study._study_id)
    assert summary.count(TrialState.COMPLETE) == 3
    assert summary.count(TrialState.PRUNED, TrialState.FAIL) == 2
    assert summary.count(TrialState.RUNNING) == 1
    assert summary.last_state == TrialState.RUNNING
    assert summary.best_value == 1.5
    counts, best = progress(study)
    assert (counts.counted, counts.reserved, counts.last_state, best) == (4, 5, "RUNNING", 1.5)
    assert trial_counts(study) == replace(counts, last_state=None) and best_value(study) == 1.5
    assert storage.state_counts(study._study_id) == summary.states


def test_a_failed_flush_drops_the_buffer_and_reports_the_error(storage_url: str) -> None:
    """A trial failed elsewhere (by another worker's heartbeat check) refuses the buffered
    writes: the error surfaces once, and later calls are not poisoned by the same buffer."""
    study, storage = _study(storage_url)
    trial = study.ask()
    trial.set_user_attr("late", 1)
    _fresh_view(storage_url).tell(trial.number, state=TrialState.FAIL)
    with pytest.raises(RuntimeError, match="finished"):
        storage.flush()
    (other,) = _fresh_view(storage_url).get_trials()
    assert other.state == TrialState.FAIL and other.user_attrs == {}
    assert len(study.get_trials()) == 1  # the next call goes through


def test_every_storage_method_of_optuna_is_classified_for_the_buffer() -> None:
    """A method a new Optuna release adds to RDBStorage would read or write around the buffer
    (reading stale rows, or writing before buffered ones): each must be placed on purpose."""
    import inspect

    from sweep.search._optuna.buffer import (
        BUFFERED,
        FLUSH_FIRST,
        FLUSH_TRIAL,
        OWN,
        UNBUFFERED,
    )

    methods = {
        name
        for name, value in inspect.getmembers(optuna.storages.RDBStorage)
        if callable(value) and not name.startswith("__")
    }
    classified = [
        BUFFERED, OWN, set(FLUSH_TRIAL), set(FLUSH_FIRST), UNBUFFERED
    ]
    unclassified = sorted(methods - set().union(*classified))
    assert not unclassified, f"classify these in sweep/search/_optuna/buffer.py: {unclassified}"
    assert sum(len(group) for group in classified) == len(set().union(*classified))  # disjoint
    assert not set().union(*classified) - methods, "a classified method Optuna no longer has"


# --- Optuna's storage contract through the public API (issue 16) ---------------------------


def _sqlite_url(tmp_path: Path, name: str = "sweeps.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def _conflicting_suggests(trial: optuna.Trial) -> float:
    if trial.number == 0:
        return trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_categorical("x", ["a", "b"])  # incompatible with trial 0's "x"
    return 0.0


@pytest.mark.parametrize("reference", [False, True], ids=["sweep", "rdb"])
def test_a_conflicting_suggest_fails_its_trial_as_with_optunas_storage(
    tmp_path: Path, reference: bool
) -> None:
    """It crashed Optuna's loop with AssertionError('Should not reach.') and left the trial
    RUNNING; Optuna's own storage raises ValueError at the suggest and ends the trial FAIL."""
    url = _sqlite_url(tmp_path)
    storage = optuna.storages.RDBStorage(url) if reference else open_optuna_storage(url)
    study = optuna.create_study(storage=storage)
    study.optimize(_conflicting_suggests, n_trials=1)
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        study.optimize(_conflicting_suggests, n_trials=1)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.get_trials()[1].params == {}


@pytest.mark.parametrize("reference", [False, True], ids=["sweep", "rdb"])
def test_a_trial_failed_elsewhere_refuses_the_objectives_next_write(
    tmp_path: Path, reference: bool
) -> None:
    """Another worker fails a running trial as stale; the objective then records attributes.
    Optuna's storage refuses that write, and its loop ends with "Cannot tell a FAIL trial";
    ours let the write through and the loop died with "Should not reach."."""
    url = _sqlite_url(tmp_path)
    storage = optuna.storages.RDBStorage(url) if reference else open_optuna_storage(url)
    study = optuna.create_study(storage=storage, study_name="buffered")
    other = optuna.storages.RDBStorage(url)

    def objective(trial: optuna.Trial) -> float:
        trial.report(1.0, 0)
        other.set_trial_state_values(trial_id(trial), TrialState.FAIL)
        trial.should_prune()  # reads the trial, as every epoch does
        trial.set_user_attr("train_seconds", 1.0)
        return 1.0

    with pytest.raises(ValueError, match="Cannot tell a FAIL trial"):
        study.optimize(objective, n_trials=1)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs == {}
    other.engine.dispose()


def test_a_heartbeat_learns_that_its_trial_was_failed_elsewhere(tmp_path: Path) -> None:
    """Without any read in between, the next beat (every 10 s) tells the process."""
    url = _sqlite_url(tmp_path)
    study, storage = _study(url)
    trial = study.ask()
    storage.record_heartbeat(trial_id(trial))  # the first, buffered with the trial's writes
    optuna.storages.RDBStorage(url).set_trial_state_values(trial_id(trial), TrialState.FAIL)
    storage.record_heartbeat(trial_id(trial))
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr("late", 1)


def _beats(url: str) -> dict[int, datetime.datetime]:
    with sqlalchemy.create_engine(url).connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "SELECT trial_id, heartbeat FROM trial_heartbeats"
        )).all()
    return {int(trial): beat for trial, beat in rows}


def test_a_trials_first_beat_is_written_with_its_next_writes(storage_url: str) -> None:
    """The campaign's storage buffers a trial's first heartbeat and writes it in the
    transaction of the trial's next writes (the objective's, right after its suggestions, or
    its end); every later beat is written at once, as Optuna's."""
    study, storage = _study(storage_url)
    assert storage.first_beat_with_writes
    suggested, told = study.ask(), study.ask()
    for trial in (suggested, told):
        storage.record_heartbeat(trial_id(trial))
    assert _beats(storage_url) == {}
    suggested.suggest_float("x", 0.0, 1.0)
    storage.flush(trial_id(suggested))
    assert set(_beats(storage_url)) == {trial_id(suggested)}
    study.tell(told, 1.0)
    first = _beats(storage_url)
    assert set(first) == {trial_id(suggested), trial_id(told)}
    storage.record_heartbeat(trial_id(suggested))  # the next beat, 10 s later: written now
    assert _beats(storage_url)[trial_id(suggested)] >= first[trial_id(suggested)]
    assert storage.get_trial(trial_id(suggested)).state == TrialState.RUNNING
    # A process that never flushes still gets its later beats written at once.
    plain = SweepStorage(storage_url)
    assert not plain.first_beat_with_writes
    other = optuna.create_study(storage=plain, study_name="plain").ask()
    plain.record_heartbeat(trial_id(other))
    assert trial_id(other) in _beats(storage_url)
    plain.engine.dispose()


def test_one_trials_refused_writes_never_cost_another_trials(storage_url: str) -> None:
    """A refused buffer is that trial's alone: the others are written, and only an explicit
    flush raises it (a read shows the buffers and writes nothing)."""
    study, storage = _study(storage_url)
    failed, running = study.ask(), study.ask()
    failed.set_user_attr("late", 1)
    running.set_user_attr("kept", 2)
    running.report(0.5, 0)
    _fresh_view(storage_url).tell(failed.number, state=TrialState.FAIL)
    assert study.get_trials()[1].user_attrs == {"kept": 2}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.flush()
    (gone, kept) = _fresh_view(storage_url).get_trials()
    assert gone.user_attrs == {} and gone.state == TrialState.FAIL
    assert kept.user_attrs == {"kept": 2} and kept.intermediate_values == {0: 0.5}
    storage.flush()  # the refused buffer is gone with its error
    study.tell(running, 1.0)


def test_a_cached_first_use_never_stands_in_for_the_databases(storage_url: str) -> None:
    """Through Optuna's cache, a distribution that conflicts with the one another process
    stored first was refused too late the first time and committed the second: one name,
    two distribution kinds."""
    first = optuna.create_study(storage=storage_url, study_name="buffered")  # plain Optuna
    first.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    storage = open_optuna_storage(storage_url)
    study = optuna.load_study(study_name="buffered", storage=storage)  # wrapped in the cache
    for _ in range(2):
        trial = study.ask()
        with pytest.raises(ValueError, match="Cannot set different distribution kind"):
            trial.suggest_categorical("x", ["a", "b"])
        study.tell(trial, state=TrialState.FAIL)
    kinds = {type(t.distributions["x"]) for t in _fresh_view(storage_url).get_trials() if t.params}
    assert kinds == {optuna.distributions.FloatDistribution}


def test_pickling_writes_the_buffer_first_and_rebuilds_the_engine(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path)
    study, storage = _study(url)
    trial = study.ask()
    trial.set_user_attr("before", 1)
    copy = pickle.loads(pickle.dumps(storage))
    # What Optuna's repository checks of a pickled RDBStorage (tests/storages_tests).
    assert isinstance(copy, SweepStorage) and copy.engine is not storage.engine
    assert copy.url == storage.url and copy.engine_kwargs == storage.engine_kwargs
    assert copy.skip_compatibility_check == storage.skip_compatibility_check
    assert copy.scoped_session is not storage.scoped_session
    assert copy.heartbeat_interval == storage.heartbeat_interval
    assert copy.first_beat_with_writes == storage.first_beat_with_writes
    assert copy.get_trial_user_attrs(trial_id(trial)) == {"before": 1}
    copy.set_trial_user_attr(trial_id(trial), "after", 2)
    copy.flush()
    assert storage.get_trial(trial_id(trial)).user_attrs == {"before": 1, "after": 2}
    copy.engine.dispose()


def test_pruning_reads_the_buffer_without_writing_it(tmp_path: Path) -> None:
    """`should_prune` reads the trial every epoch: it sees the buffered reports, and they stay
    buffered (a write per epoch is what the buffer exists to avoid)."""
    url = _sqlite_url(tmp_path)
    study, storage = _study(url)
    trial = study.ask()
    writes: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            writes.append(statement)

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", record)
    for epoch in range(5):
        trial.report(1.0 / (epoch + 1), epoch)
        assert not trial.should_prune()
    assert writes == []
    assert storage.get_trial(trial_id(trial)).intermediate_values == {
        e: 1.0 / (e + 1) for e in range(5)
    }
    (other,) = _fresh_view(url).get_trials()
    assert other.intermediate_values == {}
    study.tell(trial, 0.2)
    tables = [w.split()[2].strip('"`') for w in writes if w.startswith(("INSERT", "DELETE"))]
    assert tables.count("trial_intermediate_values") == 2  # one DELETE, one 5-row INSERT


def _peak_connections_while(action: Callable[[], object]) -> int:
    """The most connections this process had checked out of any pool at once during `action`."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    out = peak = 0

    def checkout(*_: object) -> None:
        nonlocal out, peak
        out += 1
        peak = max(peak, out)

    def checkin(*_: object) -> None:
        nonlocal out
        out -= 1

    event.listen(Pool, "checkout", checkout)
    event.listen(Pool, "checkin", checkin)
    try:
        action()
    finally:
        event.remove(Pool, "checkout", checkout)
        event.remove(Pool, "checkin", checkin)
    return peak


def test_opening_the_storage_holds_one_connection_at_a_time(storage_url: str) -> None:
    """Workers starting together behind a small PgBouncer pool each held one server
    connection and waited for a second (Optuna's schema check): a deadlock. Only the very
    first open of a database, which creates the tables and stamps alembic's revision, still
    takes two (Optuna's `_init_alembic`); every later open and a copy (pickle) take one."""
    storage = open_optuna_storage(storage_url)
    assert _peak_connections_while(lambda: open_optuna_storage(storage_url)) == 1
    assert _peak_connections_while(lambda: pickle.loads(pickle.dumps(storage))) == 1


def test_a_schema_optuna_does_not_know_is_refused_with_optunas_message(storage_url: str) -> None:
    open_optuna_storage(storage_url)
    engine = sqlalchemy.create_engine(storage_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v99.0.0'"))
    engine.dispose()
    with pytest.raises(Exception, match="no longer compatible with the table schema") as raised:
        open_optuna_storage(storage_url)
    assert "pip install -U optuna" in str(raised.value)


class _RecordingSampler(optuna.samplers.RandomSampler):
    """Random sampling that notes when Optuna hands it the new trial (`before_trial`, in
    `Study.ask`) and asks for the trial's relative parameters (at its first suggest)."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(seed=0)
        self.events = events

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.events.append("sampler")
        super().before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        self.events.append("sampler")
        return super().infer_relative_search_space(study, trial)


def test_a_trial_start_is_announced_once_as_soon_as_it_runs(storage_url: str) -> None:
    """The campaign releases its slot lock here: once the trial is RUNNING in the database
    (created, or taken from the WAITING queue), before Optuna's sampler sees it."""
    events: list[str] = []
    storage = open_optuna_storage(storage_url)
    assert isinstance(storage, SweepStorage)
    study = optuna.create_study(storage=storage, sampler=_RecordingSampler(events))
    study.enqueue_trial({"x": 0.5})  # a WAITING trial: created, not started

    def started() -> None:
        events.append("started")
        assert _running(storage_url) == [len(study.trials) - 1]  # as other processes see it

    def objective(trial: optuna.Trial) -> float:
        events.append("objective")
        return trial.suggest_float("x", 0.0, 1.0)

    def announced(n_trials: int) -> list[str]:
        events.clear()
        with storage.when_trial_starts(started):
            study.optimize(objective, n_trials=n_trials)
        return events[:1] + [e for e in events[1:] if e == "started"]

    assert announced(1) == ["started"]  # the WAITING trial taken
    assert announced(1) == ["started"]  # a new trial
    assert announced(2) == ["started"]  # once per block, not per trial
    assert events.count("objective") == 2 and "sampler" in events
    events.clear()
    with storage.when_trial_starts(started):
        study.enqueue_trial({"x": 0.25})  # nor for a trial queued in it
    study.optimize(objective, n_trials=1)  # nor outside one
    assert "started" not in events
    assert study.trials[0].params["x"] == 0.5 and study.trials[-1].params["x"] == 0.25


def _running(url: str) -> list[int]:
    """Numbers of the RUNNING trials, as another process sees them."""
    study = optuna.load_study(study_name=None, storage=url)
    return [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]


def test_trials_read_as_optunas_own_reader_reads_them(storage_url: str) -> None:
    """`read_trials` (plain queries, each distribution parsed once) against Optuna's ORM read:
    the same FrozenTrials for every filter Optuna's cache and samplers use."""
    storage = open_optuna_storage(storage_url)
    assert isinstance(storage, SweepStorage)
    pair = optuna.create_study(storage=storage, directions=["minimize", "maximize"])
    for values in ([1.0, 2.0], [math.inf, -3.0]):
        pair.tell(pair.ask(), values)
    study = optuna.create_study(storage=storage)
    for number, value in enumerate((1.0, math.inf, -math.inf, 0.5)):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("layers", 0, 3)
        trial.suggest_categorical("activation", ["relu", None, 2.5])
        trial.report(math.nan if number == 1 else value, 0)
        trial.report(-math.inf, 1)
        trial.set_user_attr("spec", {"widths": [number, 2], "note": "é"})
        storage.set_trial_system_attr(trial._trial_id, "worker", f"w{number}")
        study.tell(trial, value)
    pruned = study.ask()
    pruned.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.tell(pruned, state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    running = study.ask()
    running.suggest_int("layers", 0, 3)
    study.enqueue_trial({"layers": 1})
    storage.flush()

    reference = optuna.storages.RDBStorage(storage_url)
    study_id = study._study_id
    first_running = trial_id(running)
    cases: list[tuple[object, set[int], int]] = [
        (None, set(), -1),
        ((TrialState.COMPLETE,), set(), -1),
        ((TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING), set(), -1),
        (None, set(), first_running - 2),
        (None, {first_running, first_running - 3}, first_running - 1),
        ((TrialState.WAITING,), set(), -1),
    ]
    for states, included, greater_than in cases:
        with _session(storage) as session:
            ours = read_trials(session, study_id, states, included, greater_than)  # type: ignore[arg-type]
        theirs = reference._get_trials(study_id, states, included, greater_than)  # type: ignore[arg-type]
        assert _comparable(ours) == _comparable(theirs), (states, included, greater_than)
        assert [t.number for t in ours] == sorted(t.number for t in ours)
    assert len(read_trials_all(storage, study_id)) == 8
    assert read_trials_all(storage, pair._study_id) == reference._get_trials(
        pair._study_id, None, set(), -1
    )
    assert [t.values for t in read_trials_all(storage, pair._study_id)] == [
        [1.0, 2.0], [math.inf, -3.0],
    ]
    with pytest.raises(KeyError), _session(storage) as session:
        read_trials(session, study_id + 1000, None, set(), -1)
    reference.engine.dispose()


def _comparable(trials: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    """Every field of each trial, a NaN report as the string 'nan' (NaN != NaN)."""
    shown = []
    for trial in trials:
        fields = dict(vars(trial))
        fields["intermediate_values"] = {
            step: "nan" if math.isnan(v) else v for step, v in trial.intermediate_values.items()
        }
        shown.append(fields)
    return shown


def read_trials_all(storage: SweepStorage, study_id: int) -> list[optuna.trial.FrozenTrial]:
    with _session(storage) as session:
        return read_trials(session, study_id, None, set(), -1)


def _session(storage: SweepStorage) -> Any:
    return _create_scoped_session(storage.scoped_session)


def test_a_running_trial_that_never_beat_is_failed_as_stale(storage_url: str) -> None:
    """Optuna never fails a trial without a heartbeat; one left RUNNING before its first beat
    (its worker killed, or the connection lost while `ask` read it back) would hold its slot
    of the budget forever. Twice the grace period after its start, it is stale."""
    storage = SweepStorage(storage_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    orphan, recent, beating = (storage.create_new_trial(study._study_id) for _ in range(3))
    storage.record_heartbeat(beating)
    table = sqlalchemy.text(
        "UPDATE trials SET datetime_start = :start WHERE trial_id IN (:orphan, :beating)"
    )
    with storage.engine.begin() as connection:
        connection.execute(table, {
            "start": stored_now() - datetime.timedelta(seconds=5),
            "orphan": orphan, "beating": beating,
        })
    optuna.storages.fail_stale_trials(study)
    states = {t._trial_id: t.state for t in _fresh_view_of(storage_url, study).get_trials()}
    assert states == {orphan: TrialState.FAIL, recent: TrialState.RUNNING,
                      beating: TrialState.RUNNING}
    storage.engine.dispose()


def _fresh_view_of(url: str, study: optuna.Study) -> optuna.Study:
    return optuna.load_study(study_name=study.study_name, storage=url)
