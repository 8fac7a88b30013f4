"""The buffered Optuna storage: same rows as Optuna's, fewer transactions."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from sweep.search.budget import best_value, progress, trial_counts
from sweep.search.storage import SweepStorage, backend_of
from sweep.search.storage import optuna_storage as open_optuna_storage

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


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
    assert trial_counts(study) == counts and best_value(study) == 1.5


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

    from sweep.search._optuna.storage import (
        BUFFERED,
        FLUSH_FIRST,
        FLUSH_STUDY,
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
        BUFFERED, OWN, set(FLUSH_TRIAL), set(FLUSH_STUDY), set(FLUSH_FIRST), UNBUFFERED
    ]
    unclassified = sorted(methods - set().union(*classified))
    assert not unclassified, f"classify these in sweep/search/_optuna/storage.py: {unclassified}"
    assert sum(len(group) for group in classified) == len(set().union(*classified))  # disjoint
    assert not set().union(*classified) - methods, "a classified method Optuna no longer has"
