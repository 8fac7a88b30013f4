"""TPE's window and the median pruner's step values decide as Optuna's own classes do."""

from __future__ import annotations

import math
import random
from typing import Any

import optuna
import pytest
from optuna.samplers._tpe.sampler import _split_trials, default_gamma
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweep.search._optuna.sampling import (
    COUNTED_STATES,
    LazyGroups,
    OneReadTPESampler,
    SnapshotPruner,
    TrialWindow,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTRIBUTIONS = {
    "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
    "k": optuna.distributions.IntDistribution(1, 9),
}


def _study(direction: str, trials: int, *, complete_share: float, seed: int) -> optuna.Study:
    """A study of finished trials of every kind: completed (ties included), pruned at several
    steps (a NaN report among them), failed, and one still running."""
    rng = random.Random(seed)
    study = optuna.create_study(direction=StudyDirection[direction.upper()])
    for _ in range(trials):
        params = {"x": rng.uniform(-5, 5), "k": rng.randint(1, 9)}
        roll = rng.random()
        if roll < complete_share:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=DISTRIBUTIONS, value=round(rng.random(), 2)
                )
            )
        elif roll < 0.95:
            steps = rng.randint(0, 6)
            reports = {s: rng.choice([rng.random(), math.nan]) for s in range(steps)}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=DISTRIBUTIONS,
                    state=TrialState.PRUNED,
                    intermediate_values=reports,
                )
            )
        else:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=DISTRIBUTIONS, state=TrialState.FAIL
                )
            )
    study.ask()  # the constant liar's running trial
    return study


def _split_below(study: optuna.Study, trials: list[FrozenTrial], gamma: int) -> list[int]:
    considered = [t for t in trials if t.state in (*COUNTED_STATES, TrialState.RUNNING)]
    below, _ = _split_trials(study, considered, gamma)
    return [t.number for t in below]


def test_below_its_size_the_window_is_the_whole_study() -> None:
    study = _study("minimize", 99, complete_share=0.8, seed=1)
    window = TrialWindow(25, 75)
    trials = study.get_trials(deepcopy=False)
    assert window(study, trials) == trials
    assert window.left_out == 0
    assert window.gamma(50) == default_gamma(50)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize("complete_share", [0.8, 0.05])  # few completed: pruned ones go below
@pytest.mark.parametrize("size", [115, 180, 400, 1200])
def test_past_its_size_tpe_puts_below_exactly_the_trials_of_the_whole_study(
    direction: str, complete_share: float, size: int
) -> None:
    study = _study(direction, size, complete_share=complete_share, seed=size)
    everything = study.get_trials(deepcopy=False)
    window = TrialWindow(25, 75)
    seen = window(study, everything)
    counted = [t for t in everything if t.state in COUNTED_STATES]
    kept = [t for t in seen if t.state in COUNTED_STATES]

    assert len(counted) > 100
    assert len(kept) == 100 and window.left_out == len(counted) - 100
    # Every unfinished and failed trial stays; what TPE counts is cut to the window.
    assert [t.number for t in seen if t.state not in COUNTED_STATES] == [
        t.number for t in everything if t.state not in COUNTED_STATES
    ]
    # The split below is Optuna's, sized as on the whole study.
    whole = _split_below(study, everything, default_gamma(len(counted)))
    assert _split_below(study, seen, window.gamma(len(kept))) == whole
    # The others are the most recent ones.
    others = sorted({t.number for t in kept} - set(whole))
    newest = [t.number for t in counted if t.number not in whole][-len(others) :]
    assert len(others) >= 75 and others[-75:] == newest[-75:]


def test_the_window_ranks_trials_finishing_later_and_out_of_order() -> None:
    """Trials finish one by one (and the window is asked between): the trials below stay
    Optuna's, the newcomers ranked as they arrive."""
    study = _study("minimize", 150, complete_share=0.8, seed=7)
    window = TrialWindow(25, 75)
    rng = random.Random(3)
    for _ in range(60):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.0, "k": 1}, distributions=DISTRIBUTIONS, value=rng.random() / 4
            )
        )
        everything = study.get_trials(deepcopy=False)
        seen = window(study, everything)
        counted = [t for t in everything if t.state in COUNTED_STATES]
        kept = [t for t in seen if t.state in COUNTED_STATES]
        whole = _split_below(study, everything, default_gamma(len(counted)))
        assert _split_below(study, seen, window.gamma(len(kept))) == whole


def test_a_sampler_past_its_window_proposes_within_the_space() -> None:
    """A real study through the campaign's sampler, long enough to use the window, with a
    conditional parameter appearing late (sampled independently, on the same window)."""
    sampler = OneReadTPESampler(
        seed=5, multivariate=True, group=True, n_startup_trials=8, window=(25, 15)
    )
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        extra = trial.suggest_int("late", 0, 3) if trial.number >= 60 else 0
        return (x - 1) ** 2 + extra

    study.optimize(objective, n_trials=80)
    assert sampler._window.left_out == 80 - 1 - 40  # the running trial is not counted
    assert all(-5 <= t.params["x"] <= 5 for t in study.trials)
    assert any("late" in t.params for t in study.trials)
    assert study.best_value < 0.05


def _report_sequences(rng: random.Random) -> list[float]:
    return [rng.choice([rng.random(), rng.random(), math.nan]) for _ in range(rng.randint(1, 12))]


@pytest.mark.parametrize(
    "make_inner",
    [
        lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5),
        lambda: optuna.pruners.PercentilePruner(
            25.0, n_startup_trials=3, n_warmup_steps=1, interval_steps=2, n_min_trials=4
        ),
    ],
    ids=["median", "percentile"],
)
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_step_values_prune_exactly_as_optunas_percentile_pruner(
    make_inner: object, direction: str
) -> None:
    """Trial after trial, every step's decision equals Optuna's pruner asked on the study."""
    inner = make_inner()  # type: ignore[operator]
    snapshot = SnapshotPruner(inner)
    assert snapshot._steps is not None
    study = optuna.create_study(direction=StudyDirection[direction.upper()])
    rng = random.Random(11)
    decisions = 0
    for _ in range(120):
        trial = study.ask()
        pruned = False
        for step, value in enumerate(_report_sequences(rng)):
            trial.report(value, step)
            frozen = study._storage.get_trial(trial._trial_id)
            mine, theirs = snapshot.prune(study, frozen), inner.prune(study, frozen)
            assert mine == theirs, (trial.number, step)
            decisions += 1
            if mine and rng.random() < 0.7:
                pruned = True
                break
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        elif rng.random() < 0.1:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, rng.random())
    assert decisions > 300


def test_a_subclassed_percentile_pruner_is_asked_itself() -> None:
    class Never(optuna.pruners.MedianPruner):
        def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
            return False

    assert SnapshotPruner(Never())._steps is None
    assert SnapshotPruner(optuna.pruners.NopPruner())._steps is None


def _family_objective(trial: optuna.Trial) -> float:
    """A space shaped like the campaign's: a family, then the family's own groups (every
    kind of distribution TPE samples), so most trials use few of the study's groups."""
    family = trial.suggest_categorical("family", ["mlp", "formula", "power"])
    if family == "mlp":
        layers = trial.suggest_int("layers", 1, 3)
        widths = [trial.suggest_int(f"width_{i}", 2, 64, log=True) for i in range(layers)]
        activation = trial.suggest_categorical("activation", ["relu", "tanh", "linear"])
        rate = trial.suggest_float("rate", 1e-4, 1e-1, log=True)
        value = abs(sum(widths) - 40) / 40 + abs(math.log10(rate) + 2) + (activation == "relu")
    elif family == "formula":
        degree = trial.suggest_int("degree", 1, 4)
        terms = trial.suggest_float("terms", 0.5, 8.0, step=0.5)
        value = abs(degree - 2) + abs(terms - 3) / 4
    else:
        exponent = trial.suggest_float("exponent", -2.0, 2.0)
        snap = trial.suggest_categorical("snap", [True, False])
        value = abs(exponent - 0.5) + (not snap)
    if trial.number % 5 == 4:
        raise optuna.TrialPruned()
    return value


def test_lazy_groups_propose_exactly_as_optunas_grouped_tpe() -> None:
    """Each group sampled only when the trial asks for it, from the generator position eager
    sampling would have given it: the same proposals as Optuna's grouped TPE, trial for trial,
    with fewer groups sampled."""
    mine = OneReadTPESampler(seed=3, multivariate=True, group=True, n_startup_trials=8)
    plain = optuna.samplers.TPESampler(seed=3, multivariate=True, group=True, n_startup_trials=8)
    proposals, sampled = [], []
    for sampler in (mine, plain):
        study = optuna.create_study(sampler=sampler)
        calls = [0]
        sample = sampler._sample

        def counting(*args: Any, calls: list[int] = calls, sample: Any = sample) -> Any:
            calls[0] += 1
            return sample(*args)

        sampler._sample = counting  # type: ignore[method-assign]
        study.optimize(_family_objective, n_trials=80)
        proposals.append([t.params for t in study.trials])
        sampled.append(calls[0])
    assert proposals[0] == proposals[1]
    assert len({p["family"] for p in proposals[0][8:]}) == 3  # TPE drew every family
    assert sampled[0] < sampled[1] / 2, sampled


def test_lazy_groups_show_every_group_to_whoever_looks_at_them_all() -> None:
    study = optuna.create_study(
        sampler=OneReadTPESampler(seed=1, multivariate=True, group=True, n_startup_trials=8)
    )
    study.optimize(_family_objective, n_trials=20)
    trial = study.ask()
    lazy = trial.relative_params
    assert isinstance(lazy, LazyGroups)
    assert "family" in lazy and "layers" in lazy and "nothing" not in lazy
    family = lazy["family"]
    assert dict.__len__(lazy) == 1  # only the family's group sampled so far
    assert lazy.get("nothing", "absent") == "absent"
    names = set(trial.relative_search_space or {})
    assert len(lazy) == len(names)
    assert set(lazy) == names and lazy["family"] == family
    assert dict(lazy) == lazy.copy() == {name: lazy[name] for name in names}
