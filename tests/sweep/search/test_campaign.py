"""Campaign wiring: samplers, pruners, objectives, naming, resume — with real (tiny) trials."""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.scale import LinearTrainer
from benchmarks.scale import campaign_config as _scale_config
from storage import Database, ModelRegistry
from storage.engine import create_engine
from storage.locks import NamedLock
from sweep.errors import ConfigError
from sweep.nets.training import KerasTrainer
from sweep.problem.data import DataSpec
from sweep.search._optuna.sampling import SnapshotPruner
from sweep.search.budget import trial_counts
from sweep.search.campaign import Campaign
from sweep.search.config import CampaignConfig, study_name
from sweep.search.pruners import make_pruner
from sweep.search.samplers import make_sampler, operation_seed
from sweep.search.space import SearchSpace

TINY = CampaignConfig(
    operations=("add",),
    trials=3,
    data=DataSpec(examples=300, test_examples=100, extrapolation_examples=100),
    space=SearchSpace.from_dict({"epochs": 2, "layers": {"low": 0, "high": 1}}),
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("auto", optuna.samplers.TPESampler),
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
    ],
)
def test_samplers(name: str, expected: type) -> None:
    assert isinstance(make_sampler(replace(TINY, sampler=name), "add"), expected)


def test_auto_sampler_is_nsga2_with_a_second_objective() -> None:
    config = replace(TINY, second_objective="parameters")
    assert isinstance(make_sampler(config, "add"), optuna.samplers.NSGAIISampler)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_gp_sampler_without_torch_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match=r"needs the 'torch' package.*\[gp\]"):
        make_sampler(replace(TINY, sampler="gp"), "add")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruners(name: str, expected: type) -> None:
    pruner = make_pruner(replace(TINY, pruner=name), 30)
    assert isinstance(getattr(pruner, "pruner", pruner), expected)


def test_snapshot_pruner_decides_as_its_pruner_and_reads_the_study_once_per_trial() -> None:
    """The median pruner's answer is unchanged; only the per-epoch reload of trials goes."""
    inner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(pruner=inner)
    for value in (1.0, 2.0, 3.0):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, intermediate_values={step: value for step in range(5)}
            )
        )
    snapshot = SnapshotPruner(inner)
    trial = study.ask()
    reads = 0
    get_all_trials = study._storage.get_all_trials

    def counting(*args: object, **kwargs: object) -> list[optuna.trial.FrozenTrial]:
        nonlocal reads
        reads += 1
        return get_all_trials(*args, **kwargs)  # type: ignore[arg-type]

    study._storage.get_all_trials = counting  # type: ignore[method-assign]
    decisions = []
    for step, value in enumerate((5.0, 5.0, 5.0, 0.1)):
        trial.report(value, step)
        frozen = study._storage.get_trial(trial._trial_id)
        decisions.append((snapshot.prune(study, frozen), inner.prune(study, frozen)))
    assert [mine for mine, _ in decisions] == [theirs for _, theirs in decisions]
    assert [mine for mine, _ in decisions] == [False, True, True, False]
    assert reads == 1 + len(decisions)  # one snapshot; the inner pruner's own reads


def test_incremental_groups_sample_exactly_as_optunas_grouped_tpe() -> None:
    """Same seed, same conditional space: the campaign's sampler proposes the same trials as
    a plain grouped TPE (constant liar on), with fewer reads of the study."""

    def objective(trial: optuna.Trial) -> float:
        layers = trial.suggest_int("layers", 0, 2)
        widths = [trial.suggest_int(f"width_{i}", 2, 64, log=True) for i in range(layers)]
        rate = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        if trial.number % 4 == 3:
            raise optuna.TrialPruned()
        return abs(sum(widths) - 40) + abs(math.log10(rate) + 2) + layers

    mine = make_sampler(TINY, "add")
    plain = optuna.samplers.TPESampler(
        seed=operation_seed(TINY.seed, "add"), multivariate=True, group=True, n_startup_trials=8
    )
    proposals, reads = [], []
    for sampler in (mine, plain):
        study = optuna.create_study(sampler=sampler)
        count = [0]
        get_all_trials = study._storage.get_all_trials

        def counting(
            *args: object, count: list[int] = count, read: Any = get_all_trials, **kwargs: object
        ) -> list[optuna.trial.FrozenTrial]:
            count[0] += 1
            return read(*args, **kwargs)  # type: ignore[no-any-return]

        study._storage.get_all_trials = counting  # type: ignore[method-assign]
        study.optimize(objective, n_trials=40)
        proposals.append([t.params for t in study.trials])
        reads.append(count[0])
    assert proposals[0] == proposals[1]
    assert reads[0] < reads[1] - 40, reads  # at least one read fewer per trial
    assert len({tuple(sorted(p)) for p in proposals[0]}) == 3  # the groups were exercised


def test_sampler_seed_differs_per_operation_but_is_reproducible() -> None:
    first = make_sampler(TINY, "add")
    again = make_sampler(TINY, "add")
    other = make_sampler(TINY, "multiply")
    draws = [
        s.sample_independent(
            optuna.create_study(), optuna.trial.create_trial(value=0.0),
            "x", optuna.distributions.FloatDistribution(0, 1),
        )
        for s in (first, again, other)
    ]
    assert draws[0] == draws[1] != draws[2]


@pytest.mark.slow
def test_second_objective_runs_nsga2_and_promotes_by_the_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = replace(TINY, second_objective="parameters", startup_designs=False)
    with Campaign(config, Database(url), KerasTrainer()) as campaign:
        campaign.run()
    study = optuna.load_study(study_name=study_name("arith", "add"), storage=url)
    assert len(study.directions) == 2
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete and all(len(t.values) == 2 for t in complete)
    assert all(t.values[1] == t.user_attrs["parameters"] for t in complete)
    with ModelRegistry(url) as registry:
        best = registry.best("arith", "add")
    assert best is not None
    assert best.objective_value == pytest.approx(min(t.values[0] for t in complete))


@pytest.mark.slow
def test_budget_is_a_total_and_resume_adds_only_the_difference(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    once = replace(TINY, stop_when_exact=False)  # add is exact at its first design
    for config in (once, replace(once, trials=5)):
        with Campaign(config, Database(url), KerasTrainer()) as campaign:
            campaign.run()
    study = optuna.load_study(study_name="arith.add", storage=url)
    assert len(study.trials) == 5
    # The startup designs ran first, in their fixed order.
    assert [t.params.get("input_normalization") for t in study.trials[:3]] == [
        "none", "log_abs", "standard",
    ]


def test_a_worker_finding_a_slot_lock_held_works_on_another_operation(storage_url: str) -> None:
    """Workers spread over operations instead of queueing behind one study's slot lock: with
    `add`'s lock held elsewhere, this worker fills `multiply` first, then queues for `add`."""
    trainer = LinearTrainer()
    config = replace(_scale_config(3), operations=("add", "multiply"))
    with Campaign(config, Database(storage_url), trainer) as campaign:
        other_worker = create_engine(storage_url)
        lock = NamedLock(other_worker, f"{campaign.studies['add'].study_name}:slots")
        lock.acquire()
        multiply = campaign.studies["multiply"]

        def release_once_multiply_is_done() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and trial_counts(multiply).counted < 3:
                time.sleep(0.05)
            # Held a moment longer: released the instant multiply's last trial counts, the
            # worker's next try could find it free and never queue (1 run in 13 did).
            time.sleep(1.0)
            lock.release()

        releaser = threading.Thread(target=release_once_multiply_is_done)
        releaser.start()
        try:
            campaign.run()
        finally:
            releaser.join()
            other_worker.dispose()
        add_trials = campaign.studies["add"].get_trials()
        multiply_trials = multiply.get_trials()
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    assert [t.state in counted for t in add_trials] == [True] * 3
    assert [t.state in counted for t in multiply_trials] == [True] * 3
    first_add = min(t.datetime_start for t in add_trials if t.datetime_start)
    assert all(t.datetime_complete and t.datetime_complete <= first_add for t in multiply_trials)
    assert campaign.slot_lock_seconds > 0  # then it queued for add's lock, and got it


def test_opening_a_campaign_parses_its_url_once(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL is parsed at the boundary (`Database`), never again below it: 20 parses on
    SQLite and 12 on PostgreSQL before the database handle (2026-12-07, this test's count)."""
    import storage.urls

    parsed: list[str] = []
    real = storage.urls.make_url

    def counting(text: str) -> Any:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(storage.urls, "make_url", counting)
    database = Database(storage_url)
    with Campaign(TINY, database, LinearTrainer()) as campaign:
        assert campaign.registry.engine is database.engine  # one engine for all of it
        assert campaign.best() == []
    with Campaign.join(Database(storage_url), TINY.name, LinearTrainer()) as joined:
        assert set(joined.studies) == {"add"}
    assert len(parsed) == 2, parsed  # one per handle
