"""A trainer whose TensorFlow starts in a background thread, or only when first needed.

A worker spends ~6 s importing TensorFlow and, on a long study, seconds more loading the study
and the campaign from the database; neither needs the other, so a worker starts the import
in a thread and opens the campaign meanwhile (waiting on the database releases the GIL). The
parent of `sweep run --workers K` never trains: its trainer imports nothing unless used.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sweep.nets import EpochCallback, FloatArray, ModelSpec, Predictor, TrainedModel

if TYPE_CHECKING:
    from sweep.nets.training import KerasTrainer

__all__ = ["BackgroundTrainer", "importing"]

IMPORT_THREAD_NAME = "sweep-tensorflow-import"


def importing() -> bool:
    """Whether a background import of TensorFlow is still running in this process."""
    return any(t.name == IMPORT_THREAD_NAME and t.is_alive() for t in threading.enumerate())


class BackgroundTrainer:
    """A `sweep.nets.Trainer` backed by `KerasTrainer`, whose import runs ahead or lazily.

    Args:
        threads: TensorFlow's intra-op threads (`sweep.nets._runtime.configure_tensorflow`).
        start: Start the import now, in a thread; False imports on first use instead.
    """

    def __init__(self, threads: int, *, start: bool = True) -> None:
        self._threads = threads
        self._trainer: KerasTrainer | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._import_quietly, name=IMPORT_THREAD_NAME, daemon=True
            )
            self._thread.start()

    def _import(self) -> KerasTrainer:
        from sweep.nets._runtime import configure_tensorflow

        configure_tensorflow(self._threads)
        from sweep.nets.training import KerasTrainer

        return KerasTrainer()

    def _import_quietly(self) -> None:
        try:
            self._trainer = self._import()
        except BaseException as e:  # re-raised in the thread that needs the trainer
            self._error = e

    def wait(self) -> None:
        """Wait for a background import to end (TensorFlow's stderr is silenced during it)."""
        if self._thread is not None:
            self._thread.join()

    def abandon(self) -> None:
        """Stop caring about a background import: stderr is given back, nothing is joined.

        For a process leaving on Ctrl-C. A KeyboardInterrupt raised in the main thread while it
        was inside the import system can leave a module lock held that the import thread then
        waits on forever (seen 3 times in 25 Ctrl-Cs at 0.6-2 s), so joining it could hang;
        the caller exits with `os._exit`, which does not wait for the daemon thread.
        """
        from sweep.nets._runtime import restore_stderr

        restore_stderr()

    def ready(self) -> KerasTrainer:
        """The trainer, once TensorFlow is imported; raises what the import raised."""
        self.wait()
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._trainer is None:
                self._trainer = self._import()
            return self._trainer

    def train(
        self,
        spec: ModelSpec,
        x_train: npt.NDArray[np.generic],
        y_train: FloatArray,
        x_val: npt.NDArray[np.generic],
        y_val: FloatArray,
        *,
        on_epoch: EpochCallback | None = None,
        max_seconds: float = 300.0,
        seed: int = 0,
    ) -> TrainedModel:
        return self.ready().train(
            spec, x_train, y_train, x_val, y_val,
            on_epoch=on_epoch, max_seconds=max_seconds, seed=seed,
        )

    def load(self, data: bytes, *, label: str) -> Predictor:
        return self.ready().load(data, label=label)

    def versions(self) -> dict[str, str]:
        return self.ready().versions()
