"""Gathering the report's content from storage: plain values, no HTML, no model needed."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from storage import Database
from sweep.errors import ReportError
from sweep.nets import SCHEMES
from sweep.publishing.report_data import Extrapolation, Importances, gather_report

DATA = {"low": 0, "high": 50, "examples": 200, "seed": 0, "validation_fraction": 0.2,
        "test_examples": 40, "extrapolation_examples": 40}


def _add(
    study: optuna.Study, state: TrialState, scheme: str, value: float | None = None,
    reports: dict[int, float] | None = None, attrs: dict[str, str] | None = None,
) -> None:
    study.add_trial(optuna.trial.create_trial(
        state=state, value=value, intermediate_values=reports or {}, user_attrs=attrs or {},
        params={"input_normalization": scheme, "target_normalization": "none"},
        distributions={"input_normalization": CategoricalDistribution(SCHEMES),
                       "target_normalization": CategoricalDistribution(SCHEMES)},
    ))


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    storage = optuna.storages.RDBStorage(url)
    subtract = optuna.create_study(study_name="t.subtract", storage=storage)
    subtract.set_user_attr("data", DATA)
    subtract.set_user_attr("objective", "validation mae")
    _add(subtract, TrialState.COMPLETE, "none", 120.0, {0: 240.0})
    _add(subtract, TrialState.COMPLETE, "standard", 3.5)
    _add(subtract, TrialState.PRUNED, "none", reports={0: 900.0, 1: 800.0})
    _add(subtract, TrialState.PRUNED, "log")  # diverged before its first report
    _add(subtract, TrialState.PRUNED, "log_abs", attrs={"pruned_reason": "slower than 2 s"})
    _add(subtract, TrialState.FAIL, "minmax")
    subtract.ask()
    custom = optuna.create_study(study_name="t.custom", storage=storage)
    custom.set_user_attr("expression", "a +")  # not in the grammar
    custom.set_user_attr("data", {"lows": 1})  # no such setting
    optuna.create_study(study_name="other.add", storage=storage)  # another campaign's
    storage.remove_session()
    storage.engine.dispose()
    return url


def test_sections_hold_counts_history_and_the_normalisation_grid(url: str) -> None:
    report = gather_report(Database(url), "t")
    assert report.campaign == "t" and report.optuna_version == optuna.__version__
    assert [s.name for s in report.sections] == ["custom", "subtract"]
    subtract = report.sections[1]
    assert subtract.study is not None and subtract.study.objective == "validation mae"
    assert subtract.study.trials == 7
    assert subtract.study.counts == {"complete": 2, "pruned": 3, "failed": 1, "running": 1,
                                     "waiting": 0}
    assert [(p.number, p.state, p.value) for p in subtract.history][:3] == [
        (0, "COMPLETE", 120.0), (1, "COMPLETE", 3.5), (2, "PRUNED", 800.0)
    ]
    assert subtract.data is not None and subtract.data.high == 50 and subtract.band == (50, 100)
    grid = subtract.normalisation
    assert grid is not None
    assert grid.best == {("none", "none"): 120.0, ("standard", "none"): 3.5}
    assert grid.outcomes == {("log", "none"): "diverged", ("log_abs", "none"): "stopped",
                             ("minmax", "none"): "failed"}
    assert grid.inputs == ["none", "minmax", "standard", "log", "log_abs"]  # SCHEMES' order
    assert subtract.importances == Importances(2)  # too few complete trials to compute
    assert subtract.best is None and subtract.extrapolation == Extrapolation()


def test_unusable_study_attributes_become_problems(url: str) -> None:
    custom = gather_report(Database(url), "t").sections[0]
    assert custom.operation is None and custom.data is None and custom.band is None
    assert len(custom.problems) == 2
    assert custom.problems[0].startswith("the study's expression is not usable")
    assert custom.problems[1].startswith("the study's data settings are unusable")
    assert custom.study is not None and custom.study.trials == 0
    assert custom.history == [] and custom.normalisation is None and custom.importances is None


def test_a_campaign_with_nothing_stored_is_refused(url: str) -> None:
    with pytest.raises(ReportError, match="campaign 'none' has no studies and no models"):
        gather_report(Database(url), "none")
