"""Studies of S trials without running S trials: one real seed sweep, and studies prefilled with
copies of its finished trials (section 4, worker throughput).

The seed sweep is a real `sweep run` (one worker, the measured runs' campaign settings). Its
COMPLETE and PRUNED trials are copied, cycling in order, into a study created before `sweep run
--trials S` starts: their parameters, distributions, values, per-epoch reports and user
attributes are those of real trials, so the TPE sampler and the median pruner work on the kind
of history a long study has. The seed study's user attributes (its data fingerprint among them)
are copied too, so the campaign accepts the study as its own; attributes that point into the
seed campaign's model registry are not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from storage import Database
from sweep.search.config import study_name
from sweep.search.storage import optuna_storage as open_optuna_storage

__all__ = [
    "COUNTED", "OPERATION", "SeedSweep", "campaign_file", "load_trials", "prefill_study",
    "run_seed_sweep", "sweep_run",
]

OPERATION = "add"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# Attributes that point into the seed campaign's model registry: not carried to the copies.
_NOT_COPIED = ("registry_version", "promotion_error")
SEED_CAMPAIGN = "throughput-seed"


@dataclass(frozen=True)
class SeedSweep:
    """The real sweep whose finished trials are copied into the prefilled studies."""

    trials: tuple[FrozenTrial, ...]  # its COMPLETE and PRUNED trials, in order
    study_attrs: dict[str, Any]
    process_seconds: float

    @property
    def pruned(self) -> int:
        return sum(t.state == TrialState.PRUNED for t in self.trials)


def campaign_file(folder: Path, epochs: int | None, family: str | None = None) -> Path:
    """The campaign's settings: the defaults, or a fixed epoch cap, or one model family."""
    path = folder / "campaign.toml"
    lines = ["[space]"]
    if epochs is not None:
        lines.append(f"epochs = {epochs}")
    if family is not None:
        lines.append(f"family = [{family!r}]")
    text = "\n".join(lines) + "\n" if len(lines) > 1 else "# defaults\n"
    path.write_text(text, encoding="utf-8")
    return path


def sweep_run(
    url: str, campaign: str, workers: int, trials: int, config: Path, folder: Path,
    pythonpath: str | None = None,
) -> tuple[float, float]:
    """One `sweep run` process (of the checkout on `pythonpath`, else this one); returns its
    wall seconds and its start (`time.time()`)."""
    env = {**os.environ, "SWEEP_STORAGE": url, "SWEEP_ARTIFACTS": str(folder / "artifacts")}
    env.pop("SWEEP_CAMPAIGN", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    command = [
        sys.executable, "-m", "sweep", "run", "--ops", OPERATION, "--trials", str(trials),
        "--config", str(config), "--campaign", campaign, "--workers", str(workers),
    ]
    output = folder / f"{campaign}.log"
    started_at = time.time()
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
    return seconds, started_at


def load_trials(url: str, campaign: str) -> tuple[list[FrozenTrial], dict[str, Any]]:
    """Every trial of the campaign's study, and the study's user attributes."""
    storage = open_optuna_storage(Database(url))
    try:
        study = optuna.load_study(study_name=study_name(campaign, OPERATION), storage=storage)
        return study.get_trials(deepcopy=True), dict(study.user_attrs)
    finally:
        storage.engine.dispose()


def run_seed_sweep(url: str, trials: int, config: Path, folder: Path) -> SeedSweep:
    """A real 1-worker sweep of `trials` trials; its finished trials are the copies' source."""
    seconds, _ = sweep_run(url, SEED_CAMPAIGN, 1, trials, config, folder)
    finished, attrs = load_trials(url, SEED_CAMPAIGN)
    kept = tuple(t for t in finished if t.state in COUNTED)
    if not kept:
        raise RuntimeError(f"the seed sweep finished no trial ({len(finished)} trials, all failed)")
    return SeedSweep(kept, attrs, seconds)


def _copy(trial: FrozenTrial) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=trial.state,
        values=trial.values,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k not in _NOT_COPIED},
        intermediate_values=trial.intermediate_values,
    )


def prefill_study(url: str, campaign: str, seed: SeedSweep, count: int) -> None:
    """Create the campaign's study before `sweep run` does, holding `count` finished trials
    copied (cycling) from the seed sweep, with the seed study's attributes."""
    storage = open_optuna_storage(Database(url))
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name(campaign, OPERATION), direction="minimize"
        )
        for key, value in seed.study_attrs.items():
            if key != "campaign":
                study.set_user_attr(key, value)
        study.set_user_attr("campaign", campaign)
        study.add_trials([_copy(seed.trials[i % len(seed.trials)]) for i in range(count)])
    finally:
        storage.engine.dispose()
