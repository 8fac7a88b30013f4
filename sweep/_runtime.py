"""Process-wide TensorFlow settings, applied before TensorFlow starts its thread pools."""

from __future__ import annotations

import logging
import os
import sys

_configured = False


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter (CUDA probes, oneDNN notes).

    Those lines are written to file descriptor 2 before absl logging is initialised, so no
    environment variable hides them; stderr is pointed at /dev/null for the import alone.
    oneDNN's reordered float arithmetic is turned off so a trial is reproducible from its seed.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    if "tensorflow" in sys.modules or os.environ.get("SWEEP_TF_VERBOSE"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Cores shared evenly, so K workers on K cores don't oversubscribe them."""
    available = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, available // max(1, workers))


def configure_runtime(workers: int = 1) -> int:
    """Set TF's intra-op threads to this worker's share and inter-op to 1; idempotent.

    Returns the intra-op thread count in effect.
    """
    global _configured
    quiet_tensorflow()
    threads = threads_per_worker(workers)
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
    import warnings

    import optuna

    # Optuna logs every failed trial with its traceback; the sweep reports failures in one
    # line itself (and records them on the trial), so only Optuna's errors are shown.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Heartbeats, grouped TPE and the retry callback are marked experimental; we pin Optuna's
    # major version and test them, so the warnings only alarm users.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    _configured = True
    return threads
