"""Process-wide TensorFlow settings, applied before TensorFlow starts its thread pools.

Only the Keras side of the networks imports this: `import sweep` and the commands that read
SQL (`sweep best`, `sweep models`) never start TensorFlow.
"""

from __future__ import annotations

import logging
import os
import sys

from sweep import settings
from sweep.errors import ConfigError

_configured = False


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
    if "tensorflow" in sys.modules or _verbose():
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
