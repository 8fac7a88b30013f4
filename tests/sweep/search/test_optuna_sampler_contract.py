"""Optuna's own sampler test cases, run on the campaign's TPE sampler.

The cases come from the installed Optuna (`optuna.testing.pytest_samplers`, the suite Optuna
ships for third-party samplers), so they follow Optuna's version. The grouped sampler (the
campaign's) samples its groups lazily (`LazyGroups`); Optuna's relative cases call
`sample_relative` without inferring the grouped search space first, which Optuna's grouped TPE
does not support either, so they run on the ungrouped multivariate sampler.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

from sweep.search._optuna.sampling import OneReadTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _tpe(*, group: bool) -> Callable[[], BaseSampler]:
    # One random trial, then TPE's model: the relative cases tell one trial before sampling.
    return lambda: OneReadTPESampler(multivariate=True, group=group, n_startup_trials=1)


class TestGroupedTPE(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _tpe(group=True)


class TestMultivariateTPE(
    BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase
):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _tpe(group=False)
