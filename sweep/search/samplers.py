"""The samplers a campaign can use, each seeded per operation."""

from __future__ import annotations

import hashlib
import importlib.util

import optuna

from sweep.errors import ConfigError
from sweep.search._optuna.sampling import OneReadTPESampler
from sweep.search.config import CampaignConfig

__all__ = ["make_sampler", "operation_seed"]

# TPE's random start before its model takes over (the startup designs come first).
TPE_STARTUP_TRIALS = 8
NSGA2_POPULATION = 20


def operation_seed(seed: int, operation: str) -> int:
    """A stable per-operation seed (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{seed}:{operation}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def make_sampler(config: CampaignConfig, operation: str) -> optuna.samplers.BaseSampler:
    """The campaign's sampler for one operation's study.

    Raises:
        ConfigError: the sampler is unknown, or needs a package that is not installed.
    """
    seed = operation_seed(config.seed, operation)
    name = config.sampler
    if name == "auto":
        name = "nsga2" if config.multi_objective else "tpe"
    if name == "tpe":
        return OneReadTPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=TPE_STARTUP_TRIALS
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
    if name == "cmaes":
        _require("cmaes", "cmaes", "cmaes")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        _require("gp", "torch", "gp")
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}")


def _require(sampler: str, module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"sampler {sampler!r} needs the {module!r} package, which is not installed; "
            f"pip install 'neural-arithmetic-sweep[{extra}]' (see README for a CPU-only torch)"
        )
