"""What TPE's sampling costs a trial of the campaign's default search space: Optuna's grouped
TPE, the campaign's sampler sampling every group before the trial suggests anything (as it did
before `LazyGroups`), and the campaign's sampler now, sampling a group when the trial first
asks for one of its parameters.

    python -m benchmarks.lazy_groups --trials 400 --rounds 3

No training: each trial suggests a model from the default space (`SearchSpace.suggest`, on
the sweep's own storage on a fresh SQLite file) and is told a made-up value that ranks the
families as a sqrt sweep finds them (formula, then power, then MLP), so TPE draws mostly
formula trials, as there. The campaign's two samplers propose the same trials (the same
seed; checked here), so their times compare the same work; Optuna's proposes the same ones
until the campaign's TPE window (100 finished trials) leaves the rest of the study out.
Prints a Markdown table: per sampler, the median milliseconds of `suggest` per trial, overall
and per family, and the total, medians over the rounds; the rounds alternate which sampler
goes first.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import optuna

from storage import Database
from sweep.search._optuna.sampling import (
    WINDOW_BEST,
    WINDOW_RECENT,
    OneReadTPESampler,
    SnapshotStudy,
    cached_trials,
)
from sweep.search.config import CampaignConfig
from sweep.search.samplers import TPE_STARTUP_TRIALS
from sweep.search.storage import optuna_storage

__all__ = ["SAMPLERS", "SamplingRun", "main", "measure", "render"]

SEED = 7
# A made-up validation error per family, times a random factor: TPE's model then prefers the
# formula family as a real sqrt or square sweep's does.
SCALE = {"formula": 1e-9, "power": 1e-3, "mlp": 1.0}


class EagerGroups(OneReadTPESampler):
    """The campaign's sampler as it was: every group sampled at the trial's first suggest."""

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        snapshot: Any = SnapshotStudy(study, self._window(study, cached_trials(study)))
        return optuna.samplers.TPESampler.sample_relative(self, snapshot, trial, search_space)


def _settings() -> dict[str, Any]:
    return {
        "seed": SEED, "multivariate": True, "group": True, "n_startup_trials": TPE_STARTUP_TRIALS
    }


OPTUNA = "Optuna's grouped TPE"
WINDOW = WINDOW_BEST + WINDOW_RECENT

SAMPLERS: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
    OPTUNA: lambda: optuna.samplers.TPESampler(**_settings()),
    "campaign's, every group": lambda: EagerGroups(**_settings()),
    "campaign's, groups as asked": lambda: OneReadTPESampler(**_settings()),
}


@dataclass
class SamplingRun:
    sampler: str
    seconds: list[float] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    proposals: list[dict[str, Any]] = field(default_factory=list)

    def median_ms(self, family: str | None = None) -> float:
        chosen = [s for s, f in zip(self.seconds, self.families, strict=True)
                  if family is None or f == family]
        return 1e3 * median(chosen) if chosen else float("nan")


def _run(sampler: str, trials: int, path: Path) -> SamplingRun:
    space = CampaignConfig().space_for("sqrt")
    url = f"sqlite:///{path}"
    run = SamplingRun(sampler)
    values = random.Random(SEED)
    with Database(url) as database:
        study = optuna.create_study(storage=optuna_storage(database),
                                    sampler=SAMPLERS[sampler]())
        for _ in range(trials):
            trial = study.ask()
            started = time.perf_counter()
            spec = space.suggest(trial)
            run.seconds.append(time.perf_counter() - started)
            run.families.append(spec.family)
            run.proposals.append(dict(trial.params))
            study.tell(trial, SCALE[spec.family] * (0.5 + values.random()))
    return run


def measure(trials: int, rounds: int) -> list[SamplingRun]:
    """Every sampler once per round, the order rotated between rounds."""
    names = list(SAMPLERS)
    runs: list[SamplingRun] = []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                runs.append(_run(name, trials, Path(folder) / f"{len(runs)}.db"))
    # The campaign's two samplers propose the same trials throughout; Optuna's the same ones
    # until the campaign's TPE window (100 finished trials) starts to model fewer trials.
    campaign = [run.proposals for run in runs if run.sampler != OPTUNA]
    optuna_ = [run.proposals[:WINDOW] for run in runs if run.sampler == OPTUNA]
    if any(p != campaign[0] for p in campaign) or any(
        p != campaign[0][:WINDOW] for p in optuna_
    ):
        raise RuntimeError("the samplers proposed different trials: the times would not compare")
    return runs


def render(runs: list[SamplingRun]) -> list[str]:
    families = sorted({f for run in runs for f in run.families})
    shown = next(r for r in runs if r.sampler != OPTUNA)  # the campaign's trials
    counts = {f: shown.families.count(f) for f in families}
    lines = [
        "| sampler | ms per trial | " + " | ".join(f"{f} ({counts[f]})" for f in families)
        + " | total s | vs Optuna's |",
        "|---|---|" + "---|" * len(families) + "---|---|",
    ]
    reference = median(sum(r.seconds) for r in runs if r.sampler == OPTUNA)
    for name in SAMPLERS:
        mine = [r for r in runs if r.sampler == name]
        total = median(sum(r.seconds) for r in mine)
        cells = [f"{median(r.median_ms(f) for r in mine):.2f}" for f in families]
        lines.append(
            f"| {name} | {median(r.median_ms() for r in mine):.2f} | " + " | ".join(cells)
            + f" | {total:.2f} | {reference / total:.2f}x |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The sweep's storage beats during `Study.optimize`; this loop asks and tells itself.
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    runs = measure(args.trials, args.rounds)
    print("\n".join(render(runs)))
    print(f"\n{args.trials} trials per run, {args.rounds} round(s); the same proposals from "
          f"the campaign's two samplers (checked), and from Optuna's for the first {WINDOW}.")


if __name__ == "__main__":
    main()
