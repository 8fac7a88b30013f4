"""Process-wide TensorFlow settings, applied before TensorFlow starts its thread pools.

Only the Keras side of the networks imports this: `import sweep` and the commands that read
SQL (`sweep best`, `sweep models`) never start TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import types
from collections.abc import Iterator, Sequence

from sweep import settings
from sweep.errors import ConfigError

_configured = False
# fd 2 as it was before `quiet_tensorflow` pointed it at /dev/null (None when not redirected).
_saved_stderr: int | None = None
_stderr_lock = threading.Lock()


def _verbose() -> bool:
    try:
        return settings.current().tf_verbose
    except ConfigError:  # the CLI reports a bad variable itself, before anything is imported
        return False


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter (CUDA probes, oneDNN notes).

    Those lines are written to file descriptor 2 before absl logging is initialised, so no
    environment variable hides them; stderr is pointed at /dev/null for the import alone.
    oneDNN's reordered float arithmetic is turned off so a trial is reproducible from its seed.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    if "tensorflow" in sys.modules:
        return
    if _verbose():
        _import_tensorflow()
        return
    global _saved_stderr
    sys.stderr.flush()
    with _stderr_lock:
        _saved_stderr = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    try:
        _import_tensorflow()
    finally:
        restore_stderr()  # (unless the main thread already did, leaving on Ctrl-C)


def _import_tensorflow() -> None:
    """`import tensorflow`, which imports Keras 3 too, without Keras' matplotlib."""
    with keras_import_without_matplotlib():
        import tensorflow  # noqa: F401


def restore_stderr() -> None:
    """Give fd 2 back now, while an import in another thread may still be running.

    For a process that leaves without waiting for that import (Ctrl-C): its last message must
    reach the terminal, and the import's own chatter no longer matters.
    """
    global _saved_stderr
    with _stderr_lock:
        if _saved_stderr is not None:
            os.dup2(_saved_stderr, 2)
            os.close(_saved_stderr)
            _saved_stderr = None


def configure_tensorflow(threads: int) -> int:
    """Set TF's intra-op threads to `threads` and inter-op to 1; idempotent.

    Returns the intra-op thread count in effect.
    """
    global _configured
    quiet_tensorflow()
    if _configured:
        return threads
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised in this process: keep what it has
        threads = tf.config.threading.get_intra_op_parallelism_threads() or threads
    logging.getLogger("absl").setLevel(logging.ERROR)
    # Each trial builds a new model, so tf.function retracing is expected, not a problem.
    tf.get_logger().setLevel(logging.ERROR)
    _configured = True
    return threads


class _MatplotlibRefusedToKeras(importlib.abc.MetaPathFinder):
    """Answers "not installed" to Keras' own imports of matplotlib, and only to those.

    `import keras` (which `import tensorflow` runs) imports `matplotlib.pyplot`, for
    `keras.visualization`'s image galleries, which the sweep never draws, and treats an
    ImportError as "no matplotlib". That import is ~12% of a worker's start. Who imports is
    read off the importing frame, so another thread's matplotlib (the report's plots) is never
    refused, and an imported matplotlib is not looked up here at all.
    """

    active = False

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not self.active or fullname.partition(".")[0] != "matplotlib":
            return None
        frame: types.FrameType | None = sys._getframe(1)
        while frame is not None and _module_of(frame).startswith("importlib"):
            frame = frame.f_back  # the import system's own frames
        importer = _module_of(frame) if frame is not None else ""
        if importer == "keras" or importer.startswith("keras."):
            raise ModuleNotFoundError(f"No module named {fullname!r} (for Keras)", name=fullname)
        return None


def _module_of(frame: types.FrameType) -> str:
    return str(frame.f_globals.get("__name__", ""))


_keras_finder: _MatplotlibRefusedToKeras | None = None


@contextlib.contextmanager
def keras_import_without_matplotlib() -> Iterator[None]:
    """Around the first `import keras` (`import tensorflow` makes it): Keras' import-time
    matplotlib is refused.

    The finder stays on `sys.meta_path`, idle outside this block: removing it could make an
    import running in another thread skip the finder that comes next.
    """
    global _keras_finder
    if _keras_finder is None:
        _keras_finder = _MatplotlibRefusedToKeras()
        sys.meta_path.insert(0, _keras_finder)
    _keras_finder.active = True
    try:
        yield
    finally:
        _keras_finder.active = False
