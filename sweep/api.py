"""The public Python API, wired as the CLI wires it (the Keras trainer, the dashboard notes).

`sweep.run_campaign(config, storage=...)`, `sweep.load_best_model(op, storage=...)`,
`sweep.load_best_models(op, top_k=3, storage=...)`, `sweep.predict(op, a, b, storage=...)`,
`sweep.predict_many(op, pairs, storage=...)`, `sweep.pull_model(op, path, format=...,
storage=...)`, `sweep.best_models(storage=...)`, `sweep.model_history(op, storage=...)` and
`sweep.optuna_storage(storage=...)`: every function takes the database as ``storage=`` (a URL;
default ``$SWEEP_STORAGE``, else ``sqlite:///sweeps.db``).
"""

from __future__ import annotations

from storage import ModelEntry
from sweep.publishing.models import (
    best_models,
    load_best_model,
    load_best_models,
    model_history,
    predict,
    predict_many,
    pull_model,
    storage_url,
)
from sweep.search.config import CampaignConfig
from sweep.search.reporting import Reporter
from sweep.search.storage import SweepStorage
from sweep.search.storage import optuna_storage as _optuna_storage

__all__ = [
    "best_models",
    "load_best_model",
    "load_best_models",
    "model_history",
    "optuna_storage",
    "predict",
    "predict_many",
    "pull_model",
    "run_campaign",
]


def optuna_storage(storage: str | None = None) -> SweepStorage:
    """The Optuna storage the sweep's workers use (buffered writes, heartbeats, our engine).

    ``optuna.load_study(study_name="arith.multiply", storage=sweep.optuna_storage(url))``
    opens a campaign's study exactly as a worker does.
    """
    return _optuna_storage(storage_url(storage))


def run_campaign(
    config: CampaignConfig,
    storage: str | None = None,
    reporter: Reporter | None = None,
    *,
    workers: int = 1,
) -> list[ModelEntry]:
    """Run (or resume) a campaign in this process; returns the best model per operation.

    Trains with Keras (one worker's share of this machine's cores: `workers`), and writes the
    study notes and artifacts as `sweep run` does.
    """
    from sweep.nets._runtime import configure_tensorflow
    from sweep.nets.training import KerasTrainer
    from sweep.publishing.notes import default_artifact_dir, publisher
    from sweep.search.campaign import run_campaign as _run
    from sweep.search.workers import threads_per_worker

    configure_tensorflow(threads_per_worker(workers))
    return _run(
        config,
        storage_url(storage),
        KerasTrainer(),
        reporter,
        on_promoted=publisher(default_artifact_dir()),
    )
