"""Stop when exact: a study stops at its first exact best model, on every worker, for good.

Real campaigns on `LinearTrainer` (NumPy least squares): its power-family startup designs
(trials 4 and 5) are exact on add, its linear designs (learning rate 0.01, shrunk) are not.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.scale import LinearTrainer
from storage import Database, ModelRegistry
from sweep.cli.campaigns import build_config
from sweep.cli.main import build_parser
from sweep.problem.data import DataSpec
from sweep.problem.metrics import is_exact
from sweep.search.campaign import Campaign
from sweep.search.config import CampaignConfig
from sweep.search.reporting import OperationStatus, SilentReporter
from sweep.search.space import SearchSpace

SMALL = CampaignConfig(
    name="exact",
    operations=("add",),
    trials=200,
    timeout=120,  # a safety net: the test fails on its counts long before
    data=DataSpec(examples=300, test_examples=100, extrapolation_examples=100),
    space=SearchSpace.from_dict({"epochs": 2}),
)
EXACT_DESIGN = 4  # the first power-family startup design


class Finished(SilentReporter):
    def __init__(self) -> None:
        super().__init__()
        self.finished: list[OperationStatus] = []

    def operation_finished(self, status: OperationStatus) -> None:
        self.finished.append(status)


def _counted(url: str, name: str = "exact.add") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _run(config: CampaignConfig, url: str) -> Finished:
    reporter = Finished()
    with Campaign(config, Database(url), LinearTrainer()) as campaign:
        campaign.run(reporter)
    return reporter


def test_a_study_stops_at_its_first_exact_model(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    reporter = _run(SMALL, url)
    assert [s.exact_trial for s in reporter.finished] == [EXACT_DESIGN]
    assert reporter.finished[0].done and reporter.finished[0].finished == EXACT_DESIGN + 1
    assert len(_counted(url)) == EXACT_DESIGN + 1  # of a budget of 200
    with ModelRegistry(url) as registry:
        best = registry.best("exact", "add")
    assert best is not None and best.trial_number == EXACT_DESIGN and is_exact(best.metrics)

    # Run again: nothing more, the study is done at once; unless told to fill the budget.
    assert [s.exact_trial for s in _run(SMALL, url).finished] == [EXACT_DESIGN]
    assert len(_counted(url)) == EXACT_DESIGN + 1
    filled = _run(replace(SMALL, trials=9, stop_when_exact=False), url)
    assert [s.exact_trial for s in filled.finished] == [None]
    assert len(_counted(url)) == 9
    assert [s.exact_trial for s in _run(replace(SMALL, trials=12), url).finished] == [
        EXACT_DESIGN
    ]
    assert len(_counted(url)) == 9


def test_without_stop_when_exact_the_budget_is_filled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    reporter = _run(replace(SMALL, trials=10, stop_when_exact=False), url)
    assert [(s.finished, s.exact_trial) for s in reporter.finished] == [(10, None)]
    assert len(_counted(url)) == 10
    with ModelRegistry(url) as registry:
        best = registry.best("exact", "add")
    assert best is not None and is_exact(best.metrics)  # found, and the budget spent anyway


def test_two_workers_both_stop_once_either_finds_the_exact_model(storage_url: str) -> None:
    """Each worker reads the registry's best before each reservation: the one that did not
    find the exact model stops too, after at most the trial it had in flight."""
    with Campaign(SMALL, Database(storage_url), LinearTrainer()):
        pass  # created here; the workers join it as `sweep worker` does
    reporters = [Finished(), Finished()]
    errors: list[BaseException] = []
    started: list[int] = []

    def work(reporter: Finished) -> None:
        try:
            with Campaign.join(Database(storage_url), "exact", LinearTrainer()) as campaign:
                campaign.run(reporter)
                started.append(campaign.trials_run)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r,)) for r in reporters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    stops = [[s.exact_trial for s in reporter.finished] for reporter in reporters]
    assert stops[0] == stops[1] and stops[0] in ([4], [5]), stops  # both power designs fit
    exact = stops[0][0]
    assert exact is not None
    # Trials 0..exact ran (startup designs first, in order) and at most one more, in flight
    # on the other worker when the exact model was promoted.
    assert len(_counted(storage_url)) == sum(started) <= exact + 2


class _Enough(Exception):
    pass


class _StopAfter(SilentReporter):
    def __init__(self, trials: int) -> None:
        super().__init__()
        self.trials = trials

    def trial_finished(self, status: OperationStatus) -> None:
        if status.finished >= self.trials:
            raise _Enough


def test_a_timeout_alone_has_no_trial_cap(tmp_path: Path) -> None:
    """`sweep run --timeout 60` was capped at the default 20 trials; now time is the budget."""
    argv = ["run", "--ops", "add", "--timeout", "60", "--no-stop-when-exact"]
    config = build_config(build_parser().parse_args(argv), "exact")
    assert (config.trials, config.timeout) == (None, 60)
    config = replace(config, name="exact", data=SMALL.data, space=SMALL.space)
    url = f"sqlite:///{tmp_path}/s.db"
    with (
        Campaign(config, Database(url), LinearTrainer()) as campaign,
        pytest.raises(_Enough),
    ):
        campaign.run(_StopAfter(25))  # stopped by the test once past 20
    assert len(_counted(url)) == 25
