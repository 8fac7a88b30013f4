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


CORE_ENV_VAR = "SWEEP_WORKER_CORE"
PIN_ENV_VAR = "SWEEP_PIN_WORKERS"


def worker_cores(workers: int) -> list[int] | None:
    """The core each of `workers` local workers is pinned to, or None to leave it to the OS.

    Measured on a 2-core machine, two workers training the same model side by side with
    Keras' `fit`: free to migrate, 5.1-7.9 s per model; pinned, a steadier 5.9-6.3 s. With the
    sweep's own loop (sweep.model), two pinned workers train as fast as one alone. Only when the
    workers fit on this process's cores; `SWEEP_PIN_WORKERS=0` turns it off.
    """
    if workers < 2 or os.environ.get(PIN_ENV_VAR, "1") == "0":
        return None
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return None
    cores = sorted(os.sched_getaffinity(0))
    if workers > len(cores):
        return None
    return cores[:workers]


def pin_to_assigned_core() -> int | None:
    """Pin every thread of this process to the core its parent assigned (`SWEEP_WORKER_CORE`).

    All threads, not just this one: importing TensorFlow has already started some, and
    threads started later inherit the mask of the thread that starts them.
    """
    value = os.environ.get(CORE_ENV_VAR)
    if not value or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        core = int(value)
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), {core})
    except (ValueError, OSError):  # a core that went away, a thread that just ended
        return None
    return core


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
