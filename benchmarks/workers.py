"""Worker throughput on PostgreSQL: the same small campaign with `sweep run --workers 1` and 2.

Each run is a real `sweep run` process (its workers are processes too), against a fresh
database given through `SWEEP_STORAGE` as a user would. Two rates are reported: over the
process's wall time (what a user waits, TensorFlow start-up included) and over the span from
the first trial's start to the last trial's end (the steady state the ratio is about).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from benchmarks._common import load_average, log
from sweep.campaign import study_name

OPERATION = "add"


@dataclass(frozen=True)
class WorkerRun:
    workers: int
    repeat: int
    counted_trials: int
    process_seconds: float
    span_seconds: float
    train_seconds: float
    load_after: str

    @property
    def trials_per_minute_process(self) -> float:
        return self.counted_trials / self.process_seconds * 60

    @property
    def trials_per_minute_span(self) -> float:
        return self.counted_trials / self.span_seconds * 60 if self.span_seconds > 0 else math.nan

    @property
    def outside_training_share(self) -> float:
        """Share of the workers' time (workers x span) not spent in recorded training."""
        capacity = self.workers * self.span_seconds
        return 1 - self.train_seconds / capacity if capacity > 0 else math.nan


def _campaign_file(folder: Path, epochs: int) -> Path:
    path = folder / "campaign.toml"
    path.write_text(f"[space]\nepochs = {epochs}\n", encoding="utf-8")
    return path


def run_workers_once(
    url: str, campaign: str, workers: int, trials: int, config: Path, folder: Path
) -> tuple[float, float, int, float]:
    """One `sweep run`; returns process seconds, trial span seconds, counted trials, training s."""
    env = {**os.environ, "SWEEP_STORAGE": url, "SWEEP_ARTIFACTS": str(folder / "artifacts")}
    env.pop("SWEEP_CAMPAIGN", None)
    command = [
        sys.executable, "-m", "sweep", "run", "--ops", OPERATION, "--trials", str(trials),
        "--config", str(config), "--campaign", campaign, "--workers", str(workers),
    ]
    output = folder / f"{campaign}.log"
    started = time.monotonic()
    with output.open("w", encoding="utf-8") as log_file:
        completed = subprocess.run(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=folder, check=False
        )
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        tail = output.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(
            f"`sweep run --workers {workers}` exited {completed.returncode}:\n{tail}"
        )
    study = optuna.load_study(study_name=study_name(campaign, OPERATION), storage=url)
    trials_done = study.get_trials(deepcopy=False)
    counted = [t for t in trials_done if t.state.name in ("COMPLETE", "PRUNED")]
    starts = [t.datetime_start for t in trials_done if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials_done if t.datetime_complete is not None]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan
    train = sum(float(t.user_attrs.get("train_seconds", 0.0)) for t in trials_done)
    return seconds, span, len(counted), train


def run_workers(
    url: str, *, trials: int, epochs: int, repeats: int
) -> list[WorkerRun]:
    """1 and 2 workers, alternating (1, 2, 2, 1, ...) so drift in the machine's load is shared."""
    runs: list[WorkerRun] = []
    orders = [(1, 2) if repeat % 2 == 0 else (2, 1) for repeat in range(repeats)]
    with tempfile.TemporaryDirectory(prefix="sweep-bench-workers-") as name:
        folder = Path(name)
        config = _campaign_file(folder, epochs)
        for repeat, order in enumerate(orders):
            for workers in order:
                campaign = f"throughput-w{workers}-r{repeat}"
                log(f"workers: {workers} worker(s), {trials} trials of {OPERATION}, #{repeat}")
                seconds, span, counted, train = run_workers_once(
                    url, campaign, workers, trials, config, folder
                )
                run = WorkerRun(workers, repeat, counted, seconds, span, train, load_average())
                log(
                    f"workers: {workers} -> {run.trials_per_minute_span:.1f} trials/min "
                    f"(span), {run.trials_per_minute_process:.1f} (process)"
                )
                runs.append(run)
    return runs
