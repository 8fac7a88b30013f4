"""The search: the only floor that imports Optuna.

The search space (the only caller of ``trial.suggest_*``), samplers, pruners, the objective,
the campaign and its policies (budget and slot reservation, retries, promotion), local workers,
and Optuna's storage as every part of the sweep opens it. It trains through the networks'
`sweep.nets.Trainer` interface and never imports Keras (KerasTuner's Oracle, not its Tuner).
Optuna's private API is touched only in `sweep.search._optuna`.

The names below load on first use, so importing the package costs nothing until they do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweep.search._optuna.internals import find_trial, record_artifact, storage_of
    from sweep.search.campaign import Campaign, run_campaign
    from sweep.search.config import (
        CampaignConfig,
        load_campaign_config,
        study_name,
        validate_campaign_name,
    )
    from sweep.search.promotion import PromotedModel, PromotionHook
    from sweep.search.storage import SweepStorage, open_existing_storage, optuna_storage

_LAZY = {
    "Campaign": "sweep.search.campaign",
    "PromotedModel": "sweep.search.promotion",
    "PromotionHook": "sweep.search.promotion",
    "run_campaign": "sweep.search.campaign",
    "CampaignConfig": "sweep.search.config",
    "load_campaign_config": "sweep.search.config",
    "study_name": "sweep.search.config",
    "validate_campaign_name": "sweep.search.config",
    "SweepStorage": "sweep.search.storage",
    "open_existing_storage": "sweep.search.storage",
    "optuna_storage": "sweep.search.storage",
    "find_trial": "sweep.search._optuna.internals",
    "record_artifact": "sweep.search._optuna.internals",
    "storage_of": "sweep.search._optuna.internals",
}

__all__ = [
    "Campaign",
    "CampaignConfig",
    "PromotedModel",
    "PromotionHook",
    "SweepStorage",
    "find_trial",
    "load_campaign_config",
    "open_existing_storage",
    "optuna_storage",
    "record_artifact",
    "run_campaign",
    "storage_of",
    "study_name",
    "validate_campaign_name",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sweep.search' has no attribute {name!r}")
