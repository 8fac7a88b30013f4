"""The dependencies the CLI builds and passes to the floors: trainers and the publisher.

They are built here, not below, because they cross floors (the search takes a trainer from
the networks and a promotion hook from publishing) and because TensorFlow's threads are set
once per process, before it is imported. Everything heavy is imported inside the functions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sweep.cli.interrupts import is_interruption

if TYPE_CHECKING:
    from sweep.nets.background import BackgroundTrainer
    from sweep.nets.training import KerasTrainer
    from sweep.search.campaign import PromotedModel

__all__ = ["background_trainer", "leave_background_import", "publisher", "training_runtime"]


def training_runtime(workers: int) -> KerasTrainer:
    """TensorFlow's threads for one of `workers` workers here, and the trainer to pass in."""
    from sweep.nets._runtime import configure_tensorflow
    from sweep.search.workers import threads_per_worker

    configure_tensorflow(threads_per_worker(workers))
    from sweep.nets.training import KerasTrainer

    return KerasTrainer()


def publisher() -> Callable[[PromotedModel], None]:
    """The promotion hook: a study note and artifacts for each newly promoted model.

    Raises:
        ConfigError: ``SWEEP_ARTIFACTS`` names a bucket that cannot be used (checked here,
            before any trial runs; a folder is checked at each promotion, a warning).
    """
    from sweep.errors import ConfigError
    from sweep.publishing.artifacts import open_s3_store
    from sweep.publishing.notes import default_artifact_dir, publisher
    from sweep.settings import S3Location

    # Shared with the dashboard (`sweep dashboard --artifacts`, the compose volume, a bucket).
    place = default_artifact_dir()
    if isinstance(place, S3Location):
        open_s3_store(place, ConfigError)
    return publisher(place)


def background_trainer(workers: int, *, start: bool) -> BackgroundTrainer:
    """TensorFlow imported in a thread while the campaign opens (or, unstarted, on first use)."""
    from sweep.nets.background import BackgroundTrainer
    from sweep.search.workers import threads_per_worker

    return BackgroundTrainer(threads_per_worker(workers), start=start)


def leave_background_import(trainer: BackgroundTrainer) -> None:
    """Before an error message: give stderr back from the import (which silences it).

    A stop signal or a refusal (a `SweepError` or `StorageError`: one line, exit 2) leaves the
    import running: the line is printed at once, not after TensorFlow's 6 s, and the process
    leaves with `os._exit` (`sweep.cli.run`), which the import's daemon thread does not delay
    (after a stop, joining it could even hang: `BackgroundTrainer.abandon`). An unexpected
    error waits for the import, so that Python's own exit and traceback find a quiet process.
    """
    from storage import StorageError
    from sweep.errors import SweepError
    from sweep.search.workers import interrupting_signal

    # (Before our handlers are installed, Python's own raises KeyboardInterrupt unrecorded.)
    error = sys.exc_info()[1]
    if (
        (error is not None and is_interruption(error))
        or interrupting_signal() is not None
        or isinstance(error, SweepError | StorageError)
    ):
        trainer.abandon()
    else:
        trainer.wait()
