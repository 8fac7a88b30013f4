"""Error measures in the operation's original units (never classification "accuracy").

Relative error is ``|prediction - truth| / |truth|``; where the truth is 0 it falls back to the
absolute error, so ``0 * b`` and ``0 / b`` are judged rather than dropped. A hit is a rounded
prediction equal to the truth for integer-valued operations, and a relative error of at most
`REAL_HIT_TOLERANCE` for real-valued ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sweep.problem.data import Dataset

REAL_HIT_TOLERANCE = 1e-6

# A model is exact when every prediction is a hit on every evaluated set (`is_exact`).
EXACT_HIT_RATE = 1.0

# Evaluated sets and the prefix of their metrics in a trial's user attributes.
SPLITS: tuple[tuple[str, str], ...] = (
    ("validation", "val_"),
    ("test", "test_"),
    ("extrapolation", "extrapolation_"),
)
METRIC_NAMES: tuple[str, ...] = (
    "mae", "median_relative_error", "max_absolute_error", "hit_rate", "count",
)


@dataclass(frozen=True)
class Metrics:
    mae: float
    median_relative_error: float
    max_absolute_error: float
    hit_rate: float
    count: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{key}": float(value) for key, value in asdict(self).items()}


def is_exact(metrics: Mapping[str, object]) -> bool:
    """Hit rate 1.0 on validation, the in-range test pairs and the extrapolation band.

    `metrics` as a trial's user attributes or a registry entry store them (``val_hit_rate``,
    ``test_hit_rate``, ``extrapolation_hit_rate``); a missing or non-numeric value (an older
    entry, a diverged trial's None) is not exact.
    """
    for _, prefix in SPLITS:
        value = metrics.get(f"{prefix}hit_rate")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not value >= EXACT_HIT_RATE:
            return False
    return True


def relative_errors(predictions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    absolute = np.abs(predictions - truth)
    scale = np.where(truth == 0, 1.0, np.abs(truth))
    return absolute / scale


def hits(predictions: np.ndarray, truth: np.ndarray, integer_valued: bool) -> np.ndarray:
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if integer_valued:
        return np.asarray(np.rint(predictions) == truth, dtype=bool)
    return np.asarray(relative_errors(predictions, truth) <= REAL_HIT_TOLERANCE, dtype=bool)


def evaluate(predictions: np.ndarray, truth: np.ndarray, integer_valued: bool) -> Metrics:
    """All measures at once; non-finite predictions count as misses with infinite error."""
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if predictions.shape != truth.shape:
        raise ValueError(f"predictions {predictions.shape} and truth {truth.shape} differ")
    if truth.size == 0:
        raise ValueError("cannot evaluate on an empty set")
    with np.errstate(invalid="ignore", over="ignore"):
        absolute = np.abs(predictions - truth)
        absolute = np.where(np.isfinite(absolute), absolute, np.inf)
        relative = relative_errors(predictions, truth)
        relative = np.where(np.isfinite(relative), relative, np.inf)
    return Metrics(
        mae=float(np.mean(absolute)),
        median_relative_error=float(np.median(relative)),
        max_absolute_error=float(np.max(absolute)),
        hit_rate=float(np.mean(hits(predictions, truth, integer_valued))),
        count=int(truth.size),
    )


def evaluate_splits(
    predict: Callable[[np.ndarray], np.ndarray], dataset: Dataset
) -> dict[str, float]:
    """Metrics on validation, unseen in-range test pairs and the extrapolation band, under
    their stored names (``val_mae``, ``test_hit_rate``, ``extrapolation_...``).

    The three splits are answered in one call: a model's answer to a row does not depend on
    the rows beside it, and each call costs a model's fixed overhead.
    """
    integer = dataset.operation.integer_valued
    sets = {
        "validation": (dataset.x_val, dataset.y_val),
        "test": (dataset.x_test, dataset.y_test),
        "extrapolation": (dataset.x_extrapolation, dataset.y_extrapolation),
    }
    ordered = [sets[split] for split, _ in SPLITS]
    answers = np.asarray(predict(np.concatenate([x for x, _ in ordered])))
    ends = np.cumsum([len(x) for x, _ in ordered])
    out: dict[str, float] = {}
    for (_, prefix), (_, y), part in zip(SPLITS, ordered, np.split(answers, ends[:-1]),
                                         strict=True):
        out.update(evaluate(part, y, integer).as_dict(prefix))
    return out

