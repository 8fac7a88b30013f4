"""Hyperparameter sweeps that find small Keras networks computing arithmetic.

Importing `sweep` registers its Keras layers, so an exported model loads with plain
``keras.saving.load_model(path)`` (safe mode on) afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweep._runtime import quiet_tensorflow

quiet_tensorflow()

from sweep.errors import (  # noqa: E402
    ConfigError,
    ExpressionError,
    FatalSweepError,
    SweepError,
    TrialFailure,
)

# Registers the normalisation layers with Keras (the reason `import sweep` precedes loading).
from sweep.normalization import Denormalize, Normalize  # noqa: E402

if TYPE_CHECKING:
    from sweep.campaign import Campaign, run_campaign
    from sweep.config import CampaignConfig
    from sweep.serving import load_best_model, predict, pull_model

__all__ = [
    "Campaign",
    "CampaignConfig",
    "ConfigError",
    "Denormalize",
    "ExpressionError",
    "FatalSweepError",
    "Normalize",
    "SweepError",
    "TrialFailure",
    "load_best_model",
    "predict",
    "pull_model",
    "run_campaign",
]

_LAZY = {
    "Campaign": "sweep.campaign",
    "run_campaign": "sweep.campaign",
    "CampaignConfig": "sweep.config",
    "load_best_model": "sweep.serving",
    "predict": "sweep.serving",
    "pull_model": "sweep.serving",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: Optuna and the storage layer load only when used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
