"""Results saved as JSON come back as they were: every type, every float, the seed trials."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from _bench_markdown import QUICK_RUN, recorded_quick_run
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from benchmarks.records import dumps, loads
from benchmarks.report import Results, render


def test_the_recorded_run_round_trips_to_the_same_json_and_report() -> None:
    text = QUICK_RUN.read_text(encoding="utf-8")
    results = Results.from_json(text)
    assert results.to_json() == text
    assert render(Results.from_json(results.to_json())) == render(results)


def test_the_recorded_run_comes_back_with_its_types() -> None:
    results = recorded_quick_run()
    assert all(isinstance(size, int) for o in results.overhead for size in o.per_trial_ms)
    assert all(isinstance(v, tuple) for v in results.section_loads.values())
    assert results.worker_seed is not None and results.worker_seed.trials
    assert all(isinstance(t, FrozenTrial) for t in results.worker_seed.trials)
    assert results.exact is not None and results.exact.cases[0].runs


@dataclass
class _Inner:
    size: int
    share: float


@dataclass
class _Outer:
    name: str
    by_size: dict[int, float]
    pair: tuple[str, float]
    inner: list[_Inner] = field(default_factory=list)
    maybe: _Inner | None = None
    missing: float = math.nan
    trials: tuple[FrozenTrial, ...] = ()


def test_floats_keys_tuples_and_nested_dataclasses_round_trip() -> None:
    value = _Outer(
        "x", {10: math.inf, 100: -0.0}, ("a", 1.5), [_Inner(1, math.nan)], _Inner(2, 0.25)
    )
    back = loads(dumps(value), _Outer)
    assert back.by_size == {10: math.inf, 100: 0.0} and list(back.by_size) == [10, 100]
    assert back.pair == ("a", 1.5)
    assert back.inner[0].size == 1 and math.isnan(back.inner[0].share)
    assert back.maybe == _Inner(2, 0.25)
    assert math.isnan(back.missing)
    assert dumps(back) == dumps(value)


def test_optunas_finished_trials_round_trip() -> None:
    started = datetime(2026, 12, 7, 1, 2, 3, 456789)
    trial = FrozenTrial(
        number=3, state=TrialState.PRUNED, value=None, values=[0.5],
        datetime_start=started, datetime_complete=started,
        params={"learning_rate": 0.01, "activation": "tanh"},
        distributions={
            "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
            "activation": CategoricalDistribution(["relu", "tanh"]),
        },
        user_attrs={"model_spec": {"hidden_layers": [8, 4]}}, system_attrs={},
        intermediate_values={0: 1.0, 1: 0.75}, trial_id=13,
    )
    back = loads(dumps(_Outer("t", {}, ("", 0.0), trials=(trial,))), _Outer).trials[0]
    assert back == trial
    assert back.intermediate_values == {0: 1.0, 1: 0.75}


def test_an_unknown_field_is_refused_and_a_missing_one_takes_its_default() -> None:
    with pytest.raises(ValueError, match="no field surprise"):
        loads('{"size": 1, "share": 0.5, "surprise": 1}', _Inner)
    back = loads('{"name": "x", "by_size": {}, "pair": ["a", 1]}', _Outer)
    assert back.inner == [] and back.maybe is None and back.pair == ("a", 1.0)
    with pytest.raises(ValueError, match="expected int"):
        loads('{"size": 1.5, "share": 0.5}', _Inner)
