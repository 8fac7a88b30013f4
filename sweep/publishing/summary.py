"""The one best-per-operation summary every view shows: the CLI table, `best --json`, the
study note and the report all read a `BestRow`, so they never disagree on what a number is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage import ModelEntry

__all__ = ["BestRow", "best_rows", "history_json", "json_rows"]


@dataclass(frozen=True)
class BestRow:
    """An operation's best model, as a person reads it (metrics on unseen pairs)."""

    operation: str
    campaign: str
    study: str
    trial: int
    version: int
    sha256: str
    size_bytes: int
    params: dict[str, Any]
    validation_objective: float
    mae: float | None
    median_relative_error: float | None
    max_absolute_error: float | None
    hit_rate: float | None
    count: int | None
    extrapolation_mae: float | None
    extrapolation_median_relative_error: float | None
    extrapolation_max_absolute_error: float | None
    extrapolation_hit_rate: float | None
    extrapolation_count: int | None

    @classmethod
    def from_entry(cls, entry: ModelEntry) -> BestRow:
        m = entry.metrics

        def metric(key: str) -> float | None:
            value = m.get(key)
            return float(value) if isinstance(value, int | float) else None

        return cls(
            operation=entry.operation,
            campaign=entry.campaign,
            study=entry.study_name,
            trial=entry.trial_number,
            version=entry.version,
            sha256=entry.sha256,
            size_bytes=entry.size_bytes,
            params=dict(entry.params),
            validation_objective=entry.objective_value,
            mae=metric("test_mae"),
            median_relative_error=metric("test_median_relative_error"),
            max_absolute_error=metric("test_max_absolute_error"),
            hit_rate=metric("test_hit_rate"),
            count=_count(m.get("test_count")),
            extrapolation_mae=metric("extrapolation_mae"),
            extrapolation_median_relative_error=metric("extrapolation_median_relative_error"),
            extrapolation_max_absolute_error=metric("extrapolation_max_absolute_error"),
            extrapolation_hit_rate=metric("extrapolation_hit_rate"),
            extrapolation_count=_count(m.get("extrapolation_count")),
        )

    @property
    def architecture(self) -> str:
        return str(self.params.get("architecture", "?"))

    @property
    def normalisation(self) -> str:
        """``input/target``, e.g. ``log_abs/log_abs``."""
        p = self.params
        return f"{p.get('input_normalization', '?')}/{p.get('target_normalization', '?')}"

    @property
    def learning_rate(self) -> float | None:
        if self.params.get("family") == "power":
            return None  # solved by least squares: no learning rate
        value = self.params.get("learning_rate")
        return float(value) if isinstance(value, int | float) else None

    def to_json(self) -> dict[str, Any]:
        """`sweep best --json`: one object per operation."""
        return {
            "operation": self.operation,
            "campaign": self.campaign,
            "study": self.study,
            "trial": self.trial,
            "version": self.version,
            "sha256": self.sha256,
            "params": self.params,
            "architecture": self.architecture,
            "mae": self.mae,
            "median_relative_error": self.median_relative_error,
            "hit_rate": self.hit_rate,
            "extrapolation_mae": self.extrapolation_mae,
            "extrapolation_median_relative_error": self.extrapolation_median_relative_error,
            "extrapolation_hit_rate": self.extrapolation_hit_rate,
            "validation_objective": self.validation_objective,
        }


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def best_rows(entries: Sequence[ModelEntry]) -> list[BestRow]:
    return [BestRow.from_entry(entry) for entry in entries]


def json_rows(entries: Sequence[ModelEntry]) -> list[dict[str, Any]]:
    return [row.to_json() for row in best_rows(entries)]


def history_json(entries: Sequence[ModelEntry]) -> list[dict[str, Any]]:
    """`sweep models --format json`: every stored version, oldest first per operation."""
    return [
        {
            "operation": e.operation,
            "campaign": e.campaign,
            "version": e.version,
            "is_best": e.is_best,
            "study": e.study_name,
            "trial": e.trial_number,
            "validation_objective": e.objective_value,
            "architecture": str(e.params.get("architecture", "?")),
            "metrics": e.metrics,
            "params": e.params,
            "sha256": e.sha256,
            "size_bytes": e.size_bytes,
            "keras_version": e.keras_version,
            "tensorflow_version": e.tensorflow_version,
            "created_at": e.created_at.isoformat(),
        }
        for e in entries
    ]
