"""Promotion: a trial's model enters the registry only if it beats the best and reloads exactly.

The model is saved, loaded back in safe mode and must reproduce the trial's validation metric
before the registry's transaction, so a model that fails the check never becomes visible. The
registry re-checks "better than the best" under its own lock (several workers may promote at
once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from storage import ModelCandidate, ModelEntry, ModelRegistry, PromotionGuard
from sweep.errors import SweepError
from sweep.nets import TrainedModel, Trainer
from sweep.problem.data import Dataset
from sweep.problem.metrics import evaluate

__all__ = ["REPRODUCE_TOLERANCE", "PromotedModel", "Promoter", "PromotionHook"]


@dataclass(frozen=True)
class PromotedModel:
    """A model that just entered the registry, while its trial still runs."""

    study: optuna.Study
    trial_number: int
    entry: ModelEntry
    model: TrainedModel
    dataset: Dataset


# Publishes a promoted model (the study note, artifacts); may raise SweepError, which is
# reported as a warning: the model is in the registry already.
PromotionHook = Callable[[PromotedModel], None]

# A reloaded model must reproduce the trial's validation metric to this relative tolerance.
REPRODUCE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Promoter:
    """Promotes one campaign's models, judged by its objective (``val_<objective>``)."""

    registry: ModelRegistry
    trainer: Trainer
    campaign: str
    objective: str

    def promote(
        self,
        *,
        dataset: Dataset,
        study_name: str,
        trial_number: int,
        model: TrainedModel,
        metrics: dict[str, float],
        params: dict[str, Any],
        guard: PromotionGuard | None = None,
    ) -> ModelEntry | None:
        """Promote `model` if it beats the registry's best for its operation; None otherwise.

        `guard` is checked in the registry's transaction (the trial must still be running).

        Raises:
            storage.PromotionRefused: `guard` refused.
            SweepError: the saved model does not load back, or answers differently.
            storage.StorageError: the registry refused or lost the write.
        """
        operation = dataset.operation.name
        value = metrics[f"val_{self.objective}"]
        if not math.isfinite(value):
            return None
        current = self.registry.best(self.campaign, operation)
        if current is not None and current.objective_value <= value:
            return None  # cheap early exit; promote_if_better re-checks under its lock
        data = model.to_bytes()
        reloaded = self.trainer.load(data, label=f"trial {trial_number}'s model")
        reproduced = evaluate(
            reloaded.predict(dataset.x_val), dataset.y_val, dataset.operation.integer_valued
        ).as_dict("val_")[f"val_{self.objective}"]
        if not np.isclose(reproduced, value, rtol=REPRODUCE_TOLERANCE, atol=1e-9):
            raise SweepError(
                f"trial {trial_number}'s reloaded model gives validation {self.objective} "
                f"{reproduced:.9g}, not {value:.9g}; not promoted"
            )
        versions = self.trainer.versions()
        candidate = ModelCandidate(
            campaign=self.campaign,
            operation=operation,
            study_name=study_name,
            trial_number=trial_number,
            objective_value=value,
            metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
            params=params,
            model_bytes=data,
            keras_version=versions.get("keras", ""),
            tensorflow_version=versions.get("tensorflow", ""),
        )
        return self.registry.promote_if_better(candidate, guard)
