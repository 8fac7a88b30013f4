"""Hyperparameter sweeps that find small Keras networks computing arithmetic.

``import sweep`` is light: no TensorFlow, no Optuna, no change to the process. The public API
below loads its floor on first use. A pulled ``.keras`` file loads with plain Keras in safe mode
after ``import sweep.nets.layers`` (which registers the normalisation layers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sweep._version import __version__ as __version__
from sweep.errors import (
    ConfigError,
    ExportError,
    ExpressionError,
    FatalSweepError,
    ModelLoadError,
    SweepError,
    TrialFailure,
)

if TYPE_CHECKING:
    from sweep.api import (
        best_models,
        load_best_model,
        load_best_models,
        model_history,
        optuna_storage,
        predict,
        predict_many,
        pull_model,
        run_campaign,
    )
    from sweep.search.campaign import Campaign
    from sweep.search.config import CampaignConfig

__all__ = [
    "Campaign",
    "CampaignConfig",
    "ConfigError",
    "ExportError",
    "ExpressionError",
    "FatalSweepError",
    "ModelLoadError",
    "SweepError",
    "TrialFailure",
    "__version__",
    "best_models",
    "campaign_from_toml",
    "load_best_model",
    "load_best_models",
    "model_history",
    "optuna_storage",
    "predict",
    "predict_many",
    "pull_model",
    "run_campaign",
]

_LAZY = {
    "Campaign": "sweep.search.campaign",
    "CampaignConfig": "sweep.search.config",
    "best_models": "sweep.api",
    "campaign_from_toml": "sweep.api",
    "load_best_model": "sweep.api",
    "load_best_models": "sweep.api",
    "model_history": "sweep.api",
    "optuna_storage": "sweep.api",
    "predict": "sweep.api",
    "predict_many": "sweep.api",
    "pull_model": "sweep.api",
    "run_campaign": "sweep.api",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: Optuna, Keras and the storage layer load only when used."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
