"""A worker's start to its first trial: one `sweep run --workers 1` on a prefilled study,
against a bare `python -c "import tensorflow"` just before it (issue 18; run by
``python -m benchmarks.workers first-trial``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import load_average
from benchmarks.prefill import OPERATION, SeedSweep, load_trials, prefill_study

__all__ = ["FirstTrial", "measure_first_trial"]


@dataclass(frozen=True)
class FirstTrial:
    """One `sweep run --workers 1` on a prefilled study: its start to its first new trial."""

    study_size: int
    code: str  # which checkout ran (PYTHONPATH), e.g. "this branch" or "main at 395d973"
    first_trial_seconds: float  # process start to the first new trial's start (its objective)
    import_tensorflow_seconds: float  # bare `python -c "import tensorflow"`, just before
    load_after: str

    @property
    def ratio(self) -> float:
        return self.first_trial_seconds / self.import_tensorflow_seconds


def _bare_import_seconds() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def measure_first_trial(
    url: str, campaign: str, *, size: int, config: Path, folder: Path, seed: SeedSweep,
    code: str, pythonpath: str | None,
) -> FirstTrial:
    """Prefill `size` trials, then one `sweep run --trials size+1`: when did its trial start?"""
    prefill_study(url, campaign, seed, size)
    bare = _bare_import_seconds()
    env = {**os.environ, "SWEEP_STORAGE": url, "SWEEP_ARTIFACTS": str(folder / "artifacts")}
    env.pop("SWEEP_CAMPAIGN", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    command = [
        sys.executable, "-m", "sweep", "run", "--ops", OPERATION, "--trials", str(size + 1),
        "--config", str(config), "--campaign", campaign, "--workers", "1",
    ]
    started = time.time()
    completed = subprocess.run(command, env=env, cwd=folder, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"`sweep run` exited {completed.returncode}: {completed.stderr[-800:]}")
    trials, _ = load_trials(url, campaign)
    first = min(t.datetime_start for t in trials[size:] if t.datetime_start is not None)
    return FirstTrial(size, code, first.timestamp() - started, bare, load_average())
