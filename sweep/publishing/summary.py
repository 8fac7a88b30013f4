"""The one best-per-operation summary every view shows: the CLI table, `best --json`, the
study note and the report all read a `BestRow`, so they never disagree on what a number is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage import CampaignRows, ModelEntry
from sweep.errors import ConfigError
from sweep.problem.operations import BUILTIN_OPERATIONS, Operation
from sweep.search.config import CampaignConfig

__all__ = [
    "BestRow",
    "OperationsByEntry",
    "best_rows",
    "history_json",
    "json_rows",
    "operations_for",
]

OperationsByEntry = Mapping[tuple[str, str], Operation | None]
"""(campaign, operation) -> the operation as its stored campaign resolves it (None: unknown)."""


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


def operations_for(
    campaigns: CampaignRows, entries: Sequence[ModelEntry]
) -> dict[tuple[str, str], Operation | None]:
    """Each entry's operation as its stored campaign resolves it (its inputs, its integer
    flag decided from its data): one campaign read and one resolution per campaign.

    None for an operation that cannot be resolved (a campaign stored by an incompatible
    version, an operation it no longer defines): its row is still listed.
    """
    by_campaign: dict[str, dict[str, Operation] | None] = {}
    config_of: dict[str, CampaignConfig | None] = {}
    found: dict[tuple[str, str], Operation | None] = {}
    for entry in entries:
        key = (entry.campaign, entry.operation)
        if key in found:
            continue
        if entry.campaign not in by_campaign:
            by_campaign[entry.campaign], config_of[entry.campaign] = _resolved(
                campaigns, entry.campaign
            )
        swept = by_campaign[entry.campaign]
        config = config_of[entry.campaign]
        operation = (swept or {}).get(entry.operation)
        if operation is None and config is not None:
            try:
                operation = config.operation(entry.operation)
            except ConfigError:
                operation = None
        if operation is None and swept is not None and config is None:
            operation = BUILTIN_OPERATIONS.get(entry.operation)
        found[key] = operation
    return found


def _resolved(
    campaigns: CampaignRows, campaign: str
) -> tuple[dict[str, Operation] | None, CampaignConfig | None]:
    """A campaign's swept operations by name, and its config ({} and None: no such campaign,
    so only built-ins; None and None: a stored campaign that cannot be read)."""
    stored = campaigns.load(campaign)
    if stored is None:
        return {}, None
    try:
        config = CampaignConfig.from_dict(stored)
        return {op.name: op for op in config.resolved_operations()}, config
    except ConfigError:
        return None, None


def _operation_fields(
    entry: ModelEntry, operations: OperationsByEntry | None
) -> dict[str, Any]:
    if operations is None:
        return {}
    operation = operations.get((entry.campaign, entry.operation))
    if operation is None:
        return {"inputs": None, "integer_valued": None}
    return {"inputs": list(operation.inputs), "integer_valued": operation.integer_valued}


def json_rows(
    entries: Sequence[ModelEntry], operations: OperationsByEntry | None = None
) -> list[dict[str, Any]]:
    """`sweep best --format json`; with `operations` (`operations_for`), each row also gives
    the operation's `inputs` (ordered names) and `integer_valued` (null if unknown)."""
    return [
        {**row.to_json(), **_operation_fields(entry, operations)}
        for row, entry in zip(best_rows(entries), entries, strict=True)
    ]


def history_json(
    entries: Sequence[ModelEntry], operations: OperationsByEntry | None = None
) -> list[dict[str, Any]]:
    """`sweep models --format json`: every stored version, oldest first per operation; with
    `operations`, `inputs` and `integer_valued` as in `json_rows`."""
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
            **_operation_fields(e, operations),
        }
        for e in entries
    ]
