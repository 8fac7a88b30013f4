"""A worker's trials run on one BLAS thread unless the user sized NumPy's thread pools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from benchmarks.scale import LinearTrainer
from benchmarks.scale import campaign_config as scale_config
from storage import Database
from sweep.search.campaign import Campaign
from sweep.search.placement import NATIVE_THREAD_VARS, one_blas_thread


def _blas_threads() -> list[int]:
    np.linalg.lstsq(np.eye(3), np.ones(3), rcond=None)  # NumPy's BLAS loaded
    return [int(pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.fixture
def unsized(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NATIVE_THREAD_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("unsized")
def test_one_blas_thread_inside_and_the_pools_as_they_were_after() -> None:
    before = _blas_threads()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with one_blas_thread():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


@pytest.mark.usefixtures("unsized")
def test_a_size_the_user_set_is_theirs(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _blas_threads()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with one_blas_thread():
        assert _blas_threads() == before


class _Recording(LinearTrainer):
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(_blas_threads())
        return super().train(*args, **kwargs)


@pytest.mark.usefixtures("unsized")
def test_a_campaigns_trials_train_on_one_blas_thread(tmp_path: Path) -> None:
    trainer = _Recording()
    with Campaign(scale_config(3), Database(f"sqlite:///{tmp_path / 's.db'}"), trainer) as run:
        run.run()
    assert trainer.seen and all(set(seen) == {1} for seen in trainer.seen)
