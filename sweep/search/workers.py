"""Local worker processes for `sweep run --workers K`, and signal handling for workers.

The parent starts K `sweep worker` processes, prepares the campaign while they import
TensorFlow, then lets them go; they coordinate only through the database (exactly as workers
on other hosts do), and the parent reports progress by reading the studies. The storage URL
reaches children through the environment, never their command line, so the password is not
visible in `ps`.

Imports nothing heavy (no Optuna): the parent starts its workers before it loads Optuna.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from sweep import settings
from sweep.errors import ConfigError, FatalSweepError
from sweep.search._signals import install_signal_handlers as install_signal_handlers
from sweep.search._signals import interrupting_signal as interrupting_signal
from sweep.search.placement import native_thread_env
from sweep.search.placement import pin_to_assigned_core as pin_to_assigned_core
from sweep.search.placement import threads_per_worker as threads_per_worker
from sweep.search.placement import worker_cores as worker_cores
from sweep.search.reporting import OperationStatus, Reporter

if TYPE_CHECKING:
    from storage import Database
    from sweep.search.campaign import Campaign

STORAGE_ENV_VAR = "SWEEP_STORAGE"
CAMPAIGN_ENV_VAR = "SWEEP_CAMPAIGN"
WORKERS_ENV_VAR = "SWEEP_WORKERS"
PARENT_ENV_VAR = "SWEEP_PARENT_PID"
CORE_ENV_VAR = "SWEEP_WORKER_CORE"
POLL_SECONDS = 1.0
EXIT_POLL_SECONDS = 0.05
GO = b"go\n"
"""What the parent writes to a worker's stdin once the campaign is prepared."""


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


class LocalWorkers:
    """The K `sweep worker` processes of `sweep run --workers K`, started before the campaign.

    Started first, they import TensorFlow (3-6 s) while the parent imports Optuna and prepares
    the campaign (1-2 s), instead of after it. Each waits on its stdin before it opens the
    database: the campaign it joins must exist with this run's settings. `release` lets them
    go; `stop` before that (the preparation failed or was interrupted) closes their stdin, and
    they exit without touching the database.
    """

    def __init__(
        self, database: Database, campaign: str, workers: int, worker_args: Sequence[str] = ()
    ) -> None:
        env = {
            **os.environ,
            STORAGE_ENV_VAR: database.url.text,  # the workers' own boundary parses it
            CAMPAIGN_ENV_VAR: campaign,
            WORKERS_ENV_VAR: str(workers),
            PARENT_ENV_VAR: str(os.getpid()),
        }
        env.pop(CORE_ENV_VAR, None)
        # Each worker's NumPy gets its share of the cores too, before it loads (see placement).
        env.update(native_thread_env(threads_per_worker(workers)))
        command = [sys.executable, "-m", "sweep", "worker", "--quiet", *worker_args]
        cores = worker_cores(workers)
        self.processes: list[subprocess.Popen[bytes]] = []
        self._released = False
        try:
            for index in range(workers):
                self.processes.append(subprocess.Popen(
                    command,
                    env=env if cores is None else {**env, CORE_ENV_VAR: str(cores[index])},
                    stdin=subprocess.PIPE,
                ))
        except BaseException:
            self.stop()
            raise

    def release(self) -> None:
        """The campaign is prepared: every worker may open it now."""
        self._released = True
        for process in self.processes:
            self._close_stdin(process, GO)

    def stop(self) -> None:
        """Stop every worker and wait for it to exit.

        One still waiting for the go exits at once (code 0, nothing opened); one released is
        sent SIGINT, as Ctrl-C would, and fails its running trial cleanly before it exits.
        """
        for process in self.processes:
            if not self._released:
                self._close_stdin(process, b"")
            elif process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            process.wait()

    @staticmethod
    def _close_stdin(process: subprocess.Popen[bytes], line: bytes) -> None:
        stdin: IO[bytes] | None = process.stdin
        if stdin is None or stdin.closed:
            return
        # A worker that has died already cannot read: its exit code tells the parent why.
        with contextlib.suppress(OSError):
            if line:
                stdin.write(line)
            stdin.close()


def wait_for_the_parent() -> bool:
    """In a worker: wait until the parent `sweep run --workers K` has prepared the campaign.

    Returns:
        True to go on (also for a worker started by hand), False when the parent gave up (its
        stdin closed without the go): the worker then leaves without touching the database.
    """
    if settings.current().parent_pid is None:
        return True
    if sys.stdin is None or sys.stdin.isatty():  # SWEEP_PARENT_PID set by hand in a shell
        return True
    return sys.stdin.buffer.readline() == GO


def run_local_workers(campaign: Campaign, workers: LocalWorkers, reporter: Reporter) -> None:
    """Follow `workers`, released, until they all exit; report the studies' progress.

    Raises:
        FatalSweepError: a worker exited with an error (its own message went to stderr).
    """
    from sweep.search.budget import progress

    processes = workers.processes
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
            _wait_for_an_exit(running, POLL_SECONDS)
    except KeyboardInterrupt:
        # Ctrl-C reached the whole process group; SIGTERM reached only us: pass it on.
        workers.stop()
        raise
    failed = [(i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        codes = ", ".join(f"worker {i} exited with code {code}" for i, code in failed)
        raise FatalSweepError(f"{codes}; see its message above")


def _wait_for_an_exit(processes: list[subprocess.Popen[bytes]], seconds: float) -> None:
    """Sleep up to `seconds`, less if one of `processes` exits: the sweep ends when its last
    worker does, not at the next progress poll (up to a second later)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return
        time.sleep(EXIT_POLL_SECONDS)


def workers_from_environment() -> int:
    """How many workers share this machine (set by `run --workers K` for its children)."""
    return settings.current().workers
