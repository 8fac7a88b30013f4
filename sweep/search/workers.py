"""Local worker processes for `sweep run --workers K`, and signal handling for workers.

The parent creates the campaign, starts K `sweep worker` processes that coordinate only
through the database (exactly as workers on other hosts do), and reports progress by reading
the studies. The storage URL reaches children through the environment, never their command
line, so the password is not visible in `ps`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from sweep import settings
from sweep.errors import ConfigError, FatalSweepError
from sweep.search._signals import install_signal_handlers as install_signal_handlers
from sweep.search._signals import interrupting_signal as interrupting_signal
from sweep.search.budget import progress
from sweep.search.campaign import Campaign
from sweep.search.reporting import OperationStatus, Reporter

STORAGE_ENV_VAR = "SWEEP_STORAGE"
CAMPAIGN_ENV_VAR = "SWEEP_CAMPAIGN"
WORKERS_ENV_VAR = "SWEEP_WORKERS"
PARENT_ENV_VAR = "SWEEP_PARENT_PID"
CORE_ENV_VAR = "SWEEP_WORKER_CORE"
POLL_SECONDS = 1.0


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Cores shared evenly, so K workers on K cores don't oversubscribe them."""
    available = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, available // max(1, workers))


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


def exit_with_parent() -> None:
    """A worker started by `run --workers K` stops (failing its trial cleanly) if the parent
    dies: nobody would watch it otherwise, and a killed `sweep run` must not leave orphans.

    Raises:
        ConfigError: ``SWEEP_PARENT_PID`` names a process that is not this one's parent (the
            variable is set by `sweep run --workers`, not by hand).
    """
    parent = settings.current().parent_pid
    if parent is None:
        return
    if os.getppid() != parent:
        raise ConfigError(
            f"SWEEP_PARENT_PID={parent} is not this worker's parent process "
            f"({os.getppid()}); it is set by `sweep run --workers K` for its workers, "
            "unset it to run a worker by hand"
        )

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sweep-parent-watch", daemon=True).start()


def run_local_workers(campaign: Campaign, workers: int, reporter: Reporter) -> None:
    """Start `workers` processes on this machine and follow them until they all exit.

    Raises:
        FatalSweepError: a worker exited with an error (its own message went to stderr).
    """
    env = {
        **os.environ,
        STORAGE_ENV_VAR: campaign.url,
        CAMPAIGN_ENV_VAR: campaign.config.name,
        WORKERS_ENV_VAR: str(workers),
        PARENT_ENV_VAR: str(os.getpid()),
    }
    env.pop(CORE_ENV_VAR, None)
    command = [sys.executable, "-m", "sweep", "worker", "--quiet"]
    cores = worker_cores(workers)
    processes = [
        subprocess.Popen(
            command, env=env if cores is None else {**env, CORE_ENV_VAR: str(cores[index])}
        )
        for index in range(workers)
    ]
    statuses: dict[str, OperationStatus] = {}
    for operation in campaign.operations:
        study = campaign.studies[operation.name]
        statuses[operation.name] = OperationStatus(
            operation.name, study.study_name, 0, campaign.config.trials, None
        )
        reporter.operation_started(statuses[operation.name])
    try:
        while True:
            running = [p for p in processes if p.poll() is None]
            for operation in campaign.operations:
                status = statuses[operation.name]
                if status.done:
                    continue
                study = campaign.studies[operation.name]
                counts, status.best_value = progress(study)
                status.finished = counts.counted
                status.last_state = counts.last_state
                reporter.trial_finished(status)
                budget_met = status.budget is not None and status.finished >= status.budget
                if budget_met or not running:
                    status.done = True
                    reporter.operation_finished(status)
            if not running:
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        # Ctrl-C reached the whole process group; SIGTERM reached only us: pass it on.
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait()
        raise
    failed = [(i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        codes = ", ".join(f"worker {i} exited with code {code}" for i, code in failed)
        raise FatalSweepError(f"{codes}; see its message above")


def workers_from_environment() -> int:
    """How many workers share this machine (set by `run --workers K` for its children)."""
    return settings.current().workers
