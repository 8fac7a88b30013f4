"""The pruners a campaign can use."""

from __future__ import annotations

import optuna

from sweep.search._optuna.sampling import SnapshotPruner
from sweep.search.config import CampaignConfig

__all__ = ["make_pruner"]


def make_pruner(config: CampaignConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """Median (on the trials read when the trial started), Hyperband, or none."""
    if config.pruner == "median":
        return SnapshotPruner(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5))
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=3, max_resource=max(max_epochs, 3))
    return optuna.pruners.NopPruner()
