"""Where a local worker runs: its share of the cores, its core, its native thread pools.

Imports nothing heavy (no NumPy). NumPy's OpenBLAS sizes its thread pool once, from the
variables and the cores it may use when NumPy loads, which in `sweep worker` is before the
worker pins itself: so the parent, `run --workers K`, sets the sizes in each worker's
environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from sweep import settings

# The thread pools of the native libraries NumPy may sit on (OpenBLAS, MKL, an OpenMP build).
NATIVE_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Cores shared evenly, so K workers on K cores don't oversubscribe them."""
    available = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, available // max(1, workers))


def native_thread_env(threads: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The thread-count variables to add for a worker with `threads` threads; a variable the
    user set already is theirs and is kept.

    Measured on this 2-core machine: `np.linalg.lstsq` of a 10,000 x 40 design took 4.3 ms
    in a free process and 286 ms in one pinned to a core after NumPy had loaded: OpenBLAS
    had started a thread per core, and its busy-waiting threads shared the one core (the
    polynomial trials of two pinned workers ran 3-7x slower than one worker's). With one
    BLAS thread the pinned figure is 5.0 ms.
    """
    current = os.environ if environ is None else environ
    return {name: str(threads) for name in NATIVE_THREAD_VARS if name not in current}


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """NumPy's BLAS on one thread while this process runs trials, unless the user sized it.

    TensorFlow trains on its own thread pools; NumPy's BLAS (the power family's least
    squares, the metrics) runs between its steps, on small matrices. OpenBLAS' threads busy-wait
    after each call and take the cores from TensorFlow's: on this 2-core machine a power
    trial's training took 398 ms with OpenBLAS' default threads and 182 ms with one, and a
    `sweep run --ops multiply` of 30 s ran 96-124 trials against 153-155 (BENCHMARKS.md,
    section 13). A worker started by `run --workers K` has its sizes set before NumPy loads.
    """
    if any(name in os.environ for name in NATIVE_THREAD_VARS):
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def worker_cores(workers: int) -> list[int] | None:
    """The core each of `workers` local workers is pinned to, or None to leave it to the OS.

    Measured on a 2-core machine, two workers training the same model side by side with
    Keras' `fit`: free to migrate, 5.1-7.9 s per model; pinned, a steadier 5.9-6.3 s. With the
    sweep's own loop (sweep.nets.training), two pinned workers train as fast as one alone. Only
    when the workers fit on this process's cores; `SWEEP_PIN_WORKERS=0` turns it off.
    """
    if workers < 2 or not settings.current().pin_workers:
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
    core = settings.current().worker_core
    if core is None or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), {core})
    except OSError:  # a core that went away, a thread that just ended
        return None
    return core
