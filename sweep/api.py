"""The public Python API, wired as the CLI wires it (the Keras trainer, the dashboard notes).

`sweep.run_campaign(config, storage=...)`, `sweep.load_best_model(op, storage=...)`,
`sweep.load_best_models(op, top_k=3, storage=...)`, `sweep.predict(op, *inputs, storage=...)`
(or one mapping of input name to value), `sweep.predict_many(op, rows, storage=...)` (rows in
the operation's input order, or a mapping of input name to column), `sweep.pull_model(op,
path, format=..., storage=...)`, `sweep.best_models(storage=...)`, `sweep.model_history(op,
storage=...)` and `sweep.optuna_storage(storage=...)`: every function takes the database as
``storage=`` (a URL; default ``$SWEEP_STORAGE``, else ``sqlite:///sweeps.db``, or a
`storage.Database` already open). This is a boundary, as the CLI is: each call parses the URL
once into one `storage.Database` (one engine) and hands that down.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage import Database, ModelEntry
from sweep import settings
from sweep.publishing import models
from sweep.search.config import DEFAULT_CAMPAIGN, CampaignConfig
from sweep.search.reporting import Reporter
from sweep.search.storage import SweepStorage
from sweep.search.storage import optuna_storage as _optuna_storage

if TYPE_CHECKING:
    import keras

    from sweep.publishing.models import Prediction, Predictions

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

Storage = str | Database | None
"""A storage URL, a `storage.Database`, or None for ``$SWEEP_STORAGE`` / the default."""


def database(storage: Storage = None, *, read_only: bool = False) -> Database:
    """`storage` as a database handle: parsed once (``$SWEEP_STORAGE``, else the default).

    `read_only` for readers: a missing SQLite file or a database without the sweep's tables
    is refused, never created (a handle passed in is used as it is).
    """
    if isinstance(storage, Database):
        return storage
    current = settings.current()
    return Database.resolve(
        storage, current.storage, read_only=read_only, patience=current.database_patience
    )


@contextmanager
def _opened(storage: Storage) -> Iterator[Database]:
    """A reader's handle for one call; closed after it unless the caller passed it in."""
    handle = database(storage, read_only=True)
    try:
        yield handle
    finally:
        if handle is not storage:
            handle.close()


def optuna_storage(storage: Storage = None) -> SweepStorage:
    """The Optuna storage the sweep's workers use (buffered writes, heartbeats, our engine).

    ``optuna.load_study(study_name="arith.multiply", storage=sweep.optuna_storage(url))``
    opens a campaign's study exactly as a worker does.
    """
    return _optuna_storage(database(storage))


def campaign_from_toml(path: str | os.PathLike[str]) -> CampaignConfig:
    """A campaign file read and validated as `sweep run --config` reads it: its tables are
    read (relative to the file's folder) and checked whole; nothing is written.

    Raises:
        ConfigError: one line naming the first bad value, file, row or column.
    """
    from sweep.search.config import config_from_toml, load_toml

    config = config_from_toml(load_toml(Path(path)), base_dir=Path(path).parent)
    config.validate()
    return config


def run_campaign(
    config: CampaignConfig,
    storage: Storage = None,
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
    handle = database(storage)
    try:
        return _run(
            config,
            handle,
            KerasTrainer(),
            reporter,
            on_promoted=publisher(default_artifact_dir()),
        )
    finally:
        if handle is not storage:
            handle.close()


def load_best_model(
    operation: str,
    *,
    storage: Storage = None,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
) -> keras.Model:
    """The best (or a given version's) model for `operation`, loaded in Keras safe mode.

    Raises:
        ConfigError: unknown operation. storage.ModelNotFound: no model yet.
        storage.ChecksumMismatch: corrupted blob. sweep.nets.saving.ModelLoadError: unsafe or
        incompatible model.
    """
    with _opened(storage) as handle:
        return models.load_best_model(
            operation, database=handle, campaign=campaign, version=version
        )


def load_best_models(
    operation: str,
    top_k: int = 3,
    *,
    storage: Storage = None,
    campaign: str = DEFAULT_CAMPAIGN,
) -> list[keras.Model]:
    """The `top_k` best stored models for `operation`, best first (KerasTuner's
    ``get_best_models``): ranked by validation objective, the newer version first on a tie."""
    with _opened(storage) as handle:
        return models.load_best_models(operation, top_k, database=handle, campaign=campaign)


def predict(
    operation: str,
    *inputs: float | Mapping[str, float] | None,
    storage: Storage = None,
    campaign: str = DEFAULT_CAMPAIGN,
) -> Prediction:
    """Run the best model for `operation` on one row of raw inputs.

    The inputs in the operation's order (``predict("add", 2, 3)``, ``predict("gas", 1.5, 8.3,
    300, 2)``), or one mapping of name to value (``predict("gas", {"n": 1.5, "R": 8.3, "T":
    300, "V": 2})``): every input exactly once. The `Prediction`'s `answer` is rounded only
    when the operation is integer-valued and every input is a whole number; `beyond_2_53`
    says the answer is past where float64 holds every whole number; `exact` is None for an
    operation defined by a table.
    """
    with _opened(storage) as handle:
        return models.predict(operation, *inputs, database=handle, campaign=campaign)


def predict_many(
    operation: str,
    rows: Any,
    *,
    storage: Storage = None,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
) -> Predictions:
    """Run the best (or a given version's) model on many raw inputs: rows of shape (n, arity)
    in the operation's input order, or named columns (a mapping of input name to a sequence,
    or a pandas DataFrame with those columns). Per row, `Predictions.rounded` and
    `beyond_2_53` follow `predict`'s rules."""
    with _opened(storage) as handle:
        return models.predict_many(
            operation, rows, database=handle, campaign=campaign, version=version
        )


def pull_model(
    operation: str,
    output: str | os.PathLike[str] | None = None,
    *,
    storage: Storage = None,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
    force: bool = False,
    format: str = "keras",
) -> tuple[ModelEntry, Path]:
    """Write the model to `output` as ``keras`` (default ``OP.keras``), ``savedmodel`` (a
    folder, default ``OP``) or ``onnx`` (default ``OP.onnx``); never through a symlink, never
    over an existing output unless `force`, only complete outputs (temp + rename)."""
    from sweep.publishing.pulling import pull

    with _opened(storage) as handle:
        pulled = pull(
            operation, output, database=handle, campaign=campaign, version=version,
            force=force, format=format,
        )
    return pulled.entry, pulled.path


def model_history(
    operation: str | None = None,
    *,
    storage: Storage = None,
    campaign: str = DEFAULT_CAMPAIGN,
) -> list[ModelEntry]:
    """Every promoted version of a campaign (or of one operation)."""
    with _opened(storage) as handle:
        return models.model_history(operation, database=handle, campaign=campaign)


def best_models(
    *, storage: Storage = None, campaign: str | None = DEFAULT_CAMPAIGN
) -> list[ModelEntry]:
    """The registry's best model per operation."""
    with _opened(storage) as handle:
        return models.best_models(database=handle, campaign=campaign)
