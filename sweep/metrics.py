"""Error measures in the operation's original units (never classification "accuracy").

Relative error is ``|prediction - truth| / |truth|``; where the truth is 0 it falls back to the
absolute error, so ``0 * b`` and ``0 / b`` are judged rather than dropped. A hit is a rounded
prediction equal to the truth for integer-valued operations, and a relative error of at most
`REAL_HIT_TOLERANCE` for real-valued ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

REAL_HIT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Metrics:
    mae: float
    median_relative_error: float
    max_absolute_error: float
    hit_rate: float
    count: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{key}": float(value) for key, value in asdict(self).items()}


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
