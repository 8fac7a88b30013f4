"""Optuna's TPE and pruners, reading the study once per trial (private API: `_get_trials`,
TPE's grouped search space).

With the constant liar on (Optuna 5's default), TPE rereads the study, running trials
included, for every group of parameters; the grouped search space re-adds every finished trial
on every sample; a pruning check per epoch reloads the study's trials. Optuna already caches
one read of the study per trial (made when the trial's search space was inferred); here that
one read serves them all. tests/sweep/search/test_samplers.py checks the proposals are the
very ones Optuna's own classes make.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any, cast

import optuna
from optuna.search_space.group_decomposed import (
    _GroupDecomposedSearchSpace,
    _SearchSpaceGroup,
)
from optuna.trial import FrozenTrial, TrialState

__all__ = ["IncrementalGroups", "OneReadTPESampler", "SnapshotPruner", "cached_trials"]

COUNTED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)


def cached_trials(
    study: optuna.Study, states: Container[TrialState] | None = None
) -> list[FrozenTrial]:
    """The trials of Optuna's per-trial cached read of the study (no copy: do not modify)."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


class OneReadTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE (constant liar on, its default), without a reread of the study per group.

    With the constant liar, TPE rereads the study, running trials included, for every group
    of parameters: 4 reads of ~8 ms each per trial on PostgreSQL here. The read Optuna caches
    for this trial (made when its search space was inferred, milliseconds earlier, running
    trials included) serves every group instead.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
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
        read = SnapshotStudy(study, cached_trials(study))
        return super().sample_relative(cast(optuna.Study, read), trial, search_space)


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
    little. With one worker the snapshot is exactly what a fresh read would return.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner
        self._number: int | None = None
        self._trials: list[FrozenTrial] = []

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if trial.number != self._number:
            # The trials the sampler read for this trial (Optuna caches them per trial, so
            # this is no extra read unless the sampler did not read any).
            self._trials = [t for t in cached_trials(study) if t.state.is_finished()]
            self._number = trial.number
        return self.pruner.prune(cast(optuna.Study, SnapshotStudy(study, self._trials)), trial)
