"""Optuna's TPE and pruners, reading the study once per trial, at a cost that does not grow
with the study (private API: `_get_trials`, TPE's grouped search space and split, the
percentile pruner's helpers).

With the constant liar on (Optuna 5's default), TPE rereads the study, running trials
included, for every group of parameters; the grouped search space re-adds every finished trial
on every sample; a pruning check per epoch reloads the study's trials. Optuna already caches
one read of the study per trial (made when the trial's search space was inferred); here that
one read serves them all. Past a window, TPE models the best trials and the most recent
others, and the median pruner keeps each step's values as trials finish, so a trial costs
about the same at 1,000 trials as at 100 (BENCHMARKS.md, section 3).
tests/sweep/search/test_optuna_sampling.py checks the proposals and decisions are the very
ones Optuna's own classes make, on the whole study below the window and on the window past it.
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Callable, Container, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import optuna
from optuna.pruners._percentile import (
    _get_best_intermediate_result_over_steps,
    _is_first_in_interval_step,
)
from optuna.samplers._tpe.sampler import default_gamma, default_gamma_multiobjective
from optuna.search_space.group_decomposed import (
    _GroupDecomposedSearchSpace,
    _SearchSpaceGroup,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

__all__ = [
    "IncrementalGroups",
    "LazyGroups",
    "OneReadTPESampler",
    "SnapshotPruner",
    "StepValues",
    "TrialWindow",
    "cached_trials",
]

COUNTED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)

# TPE's default split puts min(ceil(n / 10), 25) finished trials below: the 25 best in a window
# keep it exact. The 75 most recent others make the window the size TPE costs at 100 trials.
WINDOW_BEST = 25
WINDOW_RECENT = 75


def cached_trials(
    study: optuna.Study, states: Container[TrialState] | None = None
) -> list[FrozenTrial]:
    """The trials of Optuna's per-trial cached read of the study (no copy: do not modify)."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


class OneReadTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE (constant liar on, its default), without a reread of the study per group,
    modelling a bounded window of the study (`TrialWindow`).

    With the constant liar, TPE rereads the study, running trials included, for every group
    of parameters: 4 reads of ~8 ms each per trial on PostgreSQL here. The read Optuna caches
    for this trial (made when its search space was inferred, milliseconds earlier, running
    trials included) serves every group instead.
    """

    def __init__(
        self, *, window: tuple[int, int] = (WINDOW_BEST, WINDOW_RECENT), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._window = TrialWindow(*window)
        # Optuna's default split size, counting the trials the window leaves out (set here:
        # the `gamma` argument is deprecated).
        self._gamma = self._window.gamma
        if kwargs.get("group"):
            self._group_decomposed_search_space = IncrementalGroups(include_pruned=True)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        read = cast(optuna.Study, SnapshotStudy(study, self._window(study, cached_trials(study))))
        if not self._group:
            return super().sample_relative(read, trial, search_space)
        if len(cached_trials(study, COUNTED_STATES)) < self._n_startup_trials:
            return {}  # TPE's random start: every parameter is sampled independently
        groups = self._relative_groups(search_space)
        return LazyGroups(groups, lambda group: self._sample(read, trial, group), self)

    def _relative_groups(
        self, search_space: dict[str, optuna.distributions.BaseDistribution]
    ) -> list[dict[str, optuna.distributions.BaseDistribution]]:
        """The groups Optuna's grouped TPE samples, in its order, each as it samples it."""
        assert self._search_space_group is not None
        groups = []
        for sub_space in self._search_space_group.search_spaces:
            group = {
                name: distribution
                for name, distribution in sorted(sub_space.items())
                if not distribution.single() and name in search_space
            }
            if group:
                groups.append(group)
        return groups

    def draws(self, group: dict[str, optuna.distributions.BaseDistribution]) -> int:
        """The uniform draws TPE's sample of one group takes from its generator: one per
        candidate for the mixture's component, and one per candidate and parameter (checked
        against Optuna's own proposals in tests/sweep/search/test_optuna_sampling.py)."""
        return self._n_ei_candidates * (1 + len(group))

    @property
    def rng(self) -> np.random.RandomState:
        return self._rng.rng

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        # A parameter no finished trial has yet: the same window (and split size) as above.
        read = SnapshotStudy(study, self._window(study, cached_trials(study)))
        return super().sample_independent(
            cast(optuna.Study, read), trial, param_name, param_distribution
        )


class LazyGroups(dict[str, Any]):
    """A trial's relative parameters, each group sampled when the trial first asks for one
    of its parameters, with the draws Optuna's grouped TPE would have given it.

    Optuna's grouped TPE samples every group of the study's search space before the trial
    suggests anything, and a trial of one family uses a few of them: a formula trial of the
    default space 3 of 9, so two thirds of TPE's time went to proposals no one asked for. TPE
    takes a fixed number of uniform draws per group (`OneReadTPESampler.draws`), so the
    generator is moved past every group at once, as eager sampling leaves it, and each group
    is sampled from the position it would have had: the proposals are Optuna's, draw for draw.

    Unlike Optuna's, the sampled values are not stored as the trial's system attributes (its
    constant liar's record of a running trial): the record held every group's values, used
    or not, and cost a write per trial; a running trial is seen through the parameters it
    suggested, which the sweep's objective writes as soon as it has suggested them.
    """

    def __init__(
        self,
        groups: list[dict[str, optuna.distributions.BaseDistribution]],
        sample: Callable[[dict[str, optuna.distributions.BaseDistribution]], dict[str, Any]],
        sampler: OneReadTPESampler,
    ) -> None:
        super().__init__()
        self._sample = sample
        self._sampler = sampler
        self._start = sampler.rng.get_state()
        self._pending: dict[str, int] = {}
        self._groups = groups
        self._offsets: list[int] = []
        position = 0
        for index, group in enumerate(groups):
            self._offsets.append(position)
            position += sampler.draws(group)
            self._pending.update(dict.fromkeys(group, index))
        sampler.rng.random_sample(position)  # as if every group had been sampled

    def _fill(self, index: int) -> None:
        group = self._groups[index]
        rng = self._sampler.rng
        after = rng.get_state()
        rng.set_state(self._start)
        rng.random_sample(self._offsets[index])
        try:
            values = self._sample(group)
        finally:
            rng.set_state(after)
        for name in group:
            del self._pending[name]
        super().update(values)

    def _fill_all(self) -> None:
        for index in sorted(set(self._pending.values())):
            self._fill(index)

    def __contains__(self, name: object) -> bool:
        return name in self._pending or super().__contains__(name)

    def __getitem__(self, name: str) -> Any:
        if name in self._pending:
            self._fill(self._pending[name])
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self:
            return default
        return self[name]

    # Anything that looks at the whole mapping sees every group sampled.
    def __iter__(self) -> Iterator[str]:
        self._fill_all()
        return super().__iter__()

    def __len__(self) -> int:
        return super().__len__() + len(self._pending)

    def keys(self) -> dict_keys[str, Any]:
        self._fill_all()
        return super().keys()

    def values(self) -> dict_values[str, Any]:
        self._fill_all()
        return super().values()

    def items(self) -> dict_items[str, Any]:
        self._fill_all()
        return super().items()

    def copy(self) -> dict[str, Any]:
        self._fill_all()
        return dict(super().items())

    def __eq__(self, other: object) -> bool:
        self._fill_all()
        return super().__eq__(other)

    def __repr__(self) -> str:
        self._fill_all()
        return super().__repr__()


class TrialWindow:
    """The trials TPE models once a single-objective study outgrows ``best + recent`` finished
    trials: the ``best`` best in TPE's own ranking, the ``recent`` most recent other finished
    ones, and every unfinished one (the constant liar's running trials).

    TPE weighs every trial on every sample, so its cost grows with the study (15, 40 and 326
    ms per trial at 100, 1,000 and 10,000 trials here). Its split puts at most 25 trials below
    (`gamma`, counting the trials left out, sizes the split as on the whole study), so with
    ``best`` at least 25 the trials below are exactly the ones TPE picks from the whole study;
    only the density of the trials above comes from the most recent ones, where TPE's own
    weights already favour recent trials. Below the window TPE sees the whole study.
    Finished trials never change, so each is ranked once.
    """

    def __init__(self, best: int, recent: int) -> None:
        self.best = best
        self.recent = recent
        self.left_out = 0
        self._multi_objective = False
        self._study_id: int | None = None
        self._ranked: set[int] = set()
        self._leaders: list[tuple[tuple[float, ...], int]] = []

    def gamma(self, n: int) -> int:
        """Optuna's default number of trials below, for the whole study."""
        if self._multi_objective:
            return default_gamma_multiobjective(n)
        return default_gamma(n + self.left_out)

    def __call__(self, study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        self.left_out = 0
        self._multi_objective = len(study.directions) > 1
        counted = [t for t in trials if t.state in COUNTED_STATES]
        if self._multi_objective or len(counted) <= self.best + self.recent:
            return trials
        if study._study_id != self._study_id:
            self._study_id = study._study_id
            self._ranked, self._leaders = set(), []
        self._rank(counted, study.direction == StudyDirection.MAXIMIZE)
        keep = {number for _, number in self._leaders}
        recent = 0
        for trial in reversed(counted):
            if recent == self.recent:
                break
            if trial.number not in keep:
                keep.add(trial.number)
                recent += 1
        self.left_out = len(counted) - len(keep)
        return [t for t in trials if t.state not in COUNTED_STATES or t.number in keep]

    def _rank(self, counted: Iterable[FrozenTrial], maximize: bool) -> None:
        leaders = self._leaders
        for trial in counted:
            if trial.number in self._ranked:
                continue
            self._ranked.add(trial.number)
            entry = (_tpe_rank(trial, maximize), trial.number)
            if len(leaders) < self.best or entry < leaders[-1]:
                bisect.insort(leaders, entry)
                del leaders[self.best :]


def _tpe_rank(trial: FrozenTrial, maximize: bool) -> tuple[float, ...]:
    """TPE's order for the trials below: completed by value, then pruned by their last
    report, the furthest step first (Optuna's `_split_trials`; ties go to the older trial)."""
    sign = -1.0 if maximize else 1.0
    if trial.state == TrialState.COMPLETE:
        return (0.0, sign * cast(float, trial.value))
    if not trial.intermediate_values:
        return (1.0, 1.0, 0.0)
    step, value = max(trial.intermediate_values.items())
    return (1.0, -float(step), math.inf if math.isnan(value) else sign * value)


class IncrementalGroups(_GroupDecomposedSearchSpace):
    """Optuna's grouped search space, adding each finished trial's parameters once.

    Optuna's version re-adds every finished trial on every sample, from a fresh read of the
    study: ~25 ms per trial at 1000 trials (profiled on this machine). Adding a trial's
    parameter names twice leaves the groups as they were, so skipping the trials already
    added gives the same groups. The trials come from the per-trial cache the sampler reads
    anyway.
    """

    def __init__(self, include_pruned: bool) -> None:
        super().__init__(include_pruned)
        self._added: set[int] = set()

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> _SearchSpaceGroup:
        states = COUNTED_STATES if self._include_pruned else (TrialState.COMPLETE,)
        for trial in cached_trials(study, states):
            if trial.number not in self._added:
                self._added.add(trial.number)
                self._search_space.add_distributions(trial.distributions)
        return copy.deepcopy(self._search_space)


class SnapshotStudy:
    """A study whose uncached trial reads return the trials of one earlier read; everything
    else (the per-trial cache, storage, directions) is the study's."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._study = study
        self._trials = trials

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        if use_cache:
            return self._study._get_trials(deepcopy, states, use_cache)
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class SnapshotPruner(optuna.pruners.BasePruner):
    """Asks its pruner with the study's trials as they were when the trial was sampled.

    A pruning check per epoch would otherwise reload the study's unfinished trials every
    epoch (~13 queries); the trials that finish elsewhere during one trial change a median
    little. With one worker the snapshot is exactly what a fresh read would return. A
    percentile (or median) pruner is answered from each step's values kept as trials
    complete (`StepValues`) rather than from a pass over every trial at every epoch.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner
        self._number: int | None = None
        self._trials: list[FrozenTrial] = []
        percentile = isinstance(pruner, optuna.pruners.PercentilePruner) and (
            type(pruner).prune is optuna.pruners.PercentilePruner.prune
        )
        self._steps = StepValues() if percentile else None

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if trial.number != self._number:
            # The trials the sampler read for this trial (Optuna caches them per trial, so
            # this is no extra read unless the sampler did not read any).
            if self._steps is not None:
                self._steps.add(study._study_id, cached_trials(study))
            else:
                self._trials = [t for t in cached_trials(study) if t.state.is_finished()]
            self._number = trial.number
        if self._steps is not None:
            return _percentile_prune(
                cast(optuna.pruners.PercentilePruner, self.pruner),
                self._steps,
                study.direction,
                trial,
            )
        return self.pruner.prune(cast(optuna.Study, SnapshotStudy(study, self._trials)), trial)


class StepValues:
    """Each step's reports of a study's completed trials, gathered as the trials complete
    (a completed trial never changes)."""

    def __init__(self) -> None:
        self.completed = 0
        self._study_id: int | None = None
        self._seen: set[int] = set()
        self._values: dict[int, np.ndarray] = {}

    def add(self, study_id: int, trials: Iterable[FrozenTrial]) -> None:
        if study_id != self._study_id:
            self._study_id, self._seen, self._values, self.completed = study_id, set(), {}, 0
        new: dict[int, list[float]] = {}
        for trial in trials:
            if trial.state != TrialState.COMPLETE or trial.number in self._seen:
                continue
            self._seen.add(trial.number)
            self.completed += 1
            for step, value in trial.intermediate_values.items():
                new.setdefault(step, []).append(value)
        for step, values in new.items():
            known = self._values.get(step)
            added = np.asarray(values, dtype=float)
            self._values[step] = added if known is None else np.concatenate((known, added))

    def at(self, step: int) -> np.ndarray:
        return self._values.get(step, np.empty(0))


def _percentile_prune(
    pruner: optuna.pruners.PercentilePruner,
    steps: StepValues,
    direction: StudyDirection,
    trial: FrozenTrial,
) -> bool:
    """`PercentilePruner.prune`, step by step, on the completed trials' values per step."""
    if steps.completed == 0 or steps.completed < pruner._n_startup_trials:
        return False
    step = trial.last_step
    if step is None or step < pruner._n_warmup_steps:
        return False
    if not _is_first_in_interval_step(
        step, trial.intermediate_values.keys(), pruner._n_warmup_steps, pruner._interval_steps
    ):
        return False
    best = _get_best_intermediate_result_over_steps(trial, direction)
    if math.isnan(best):
        return True
    values = steps.at(step)
    if len(values) < pruner._n_min_trials or np.isnan(values).all():
        return False
    maximize = direction == StudyDirection.MAXIMIZE
    cut = float(
        np.nanpercentile(values, 100 - pruner._percentile if maximize else pruner._percentile)
    )
    return best < cut if maximize else best > cut
