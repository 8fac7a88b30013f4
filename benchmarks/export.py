"""The cost of a promotion's export: the .keras archive saved, then reloaded in safe mode.

Only trials that beat their operation's best promote, so this is paid now and then, not per
trial; section 3 reports it beside the per-trial overhead.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from benchmarks._common import median
from sweep.nets.saving import load_model_bytes, serialize_model

__all__ = ["export_milliseconds"]


def export_milliseconds(repeats: int) -> float:
    """Median cost of what a promotion adds per model: save the .keras archive, reload it
    in safe mode (the registry insert itself is one row and is in the storage figures)."""
    keras.backend.clear_session()
    model = keras.Sequential(
        [
            keras.Input(shape=(2,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model(np.zeros((1, 2), dtype=np.float32))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        load_model_bytes(serialize_model(model))
        times.append(1000 * (time.perf_counter() - started))
    return median(times)
