"""Does TPE's window cost search quality? The campaign's TPE (past 100 finished trials it
models the 25 best and the 75 most recent others) against Optuna's own TPE over the whole study,
same settings and seeds, on test functions of the kind a sweep searches: mixed continuous,
integer and categorical parameters, with a conditional group.

    python -m benchmarks.tpe_window --trials 500 --seeds 5

Prints a Markdown table: per function, the median (over seeds) of the best value after 100,
250 and all trials, and the median seconds of sampling per trial over the last 100 trials.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median

import optuna

from sweep.search._optuna.sampling import OneReadTPESampler

__all__ = ["FUNCTIONS", "WindowRun", "compare", "main", "render"]

STARTUP = 8
CHECKPOINTS = (100, 250)


def _rastrigin_mixed(trial: optuna.Trial) -> float:
    xs = [trial.suggest_float(f"x{i}", -5.12, 5.12) for i in range(4)]
    k = trial.suggest_int("k", -10, 10)
    return 10 * 5 + sum(x * x - 10 * math.cos(2 * math.pi * x) for x in xs) + k * k


def _network_like(trial: optuna.Trial) -> float:
    """A sweep-shaped space: a family, a log learning rate, a depth with one width per layer
    (the conditional group), an activation; the optimum needs the right combination."""
    family = trial.suggest_categorical("family", ["mlp", "power", "formula"])
    rate = trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True)
    loss = (math.log10(rate) + 2.5) ** 2
    if family == "mlp":
        layers = trial.suggest_int("layers", 1, 3)
        widths = [trial.suggest_int(f"width_{i}", 2, 128, log=True) for i in range(layers)]
        activation = trial.suggest_categorical("activation", ["relu", "tanh", "linear"])
        loss += sum((math.log2(w) - 5) ** 2 for w in widths) / layers
        loss += {"relu": 0.0, "tanh": 0.5, "linear": 2.0}[activation] + 0.5
    else:
        degree = trial.suggest_int("degree", 1, 4)
        loss += (degree - 3) ** 2 + (0.0 if family == "formula" else 1.0)
    return loss


def _styblinski_tang(trial: optuna.Trial) -> float:
    xs = [trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(6)]
    return sum(x**4 - 16 * x**2 + 5 * x for x in xs) / 2 + 39.16617 * len(xs)


FUNCTIONS: dict[str, Callable[[optuna.Trial], float]] = {
    "rastrigin (4 real + 1 int)": _rastrigin_mixed,
    "network-like (conditional)": _network_like,
    "styblinski-tang (6 real)": _styblinski_tang,
}


@dataclass(frozen=True)
class WindowRun:
    function: str
    sampler: str
    seed: int
    best_at: dict[int, float]
    sample_seconds: float  # median per trial over the last 100 trials


def _sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    settings = {"seed": seed, "multivariate": True, "group": True, "n_startup_trials": STARTUP}
    if kind == "window":
        return OneReadTPESampler(**settings)  # type: ignore[arg-type]
    return optuna.samplers.TPESampler(**settings)  # type: ignore[arg-type]


def _run(function: str, kind: str, seed: int, trials: int) -> WindowRun:
    objective = FUNCTIONS[function]
    study = optuna.create_study(sampler=_sampler(kind, seed))
    seconds: list[float] = []
    best: dict[int, float] = {}
    for number in range(trials):
        started = time.perf_counter()
        trial = study.ask()
        value = objective(trial)  # TPE samples inside the suggest calls
        seconds.append(time.perf_counter() - started)
        study.tell(trial, value)
        if number + 1 in (*CHECKPOINTS, trials):
            best[number + 1] = study.best_value
    return WindowRun(function, kind, seed, best, median(seconds[-100:]))


def compare(trials: int, seeds: int) -> list[WindowRun]:
    """Both samplers on every function and seed, alternating which runs first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    for function in FUNCTIONS:
        for seed in range(1, seeds + 1):
            order = ("window", "whole") if seed % 2 else ("whole", "window")
            runs += [_run(function, kind, seed, trials) for kind in order]
    return runs


def render(runs: list[WindowRun], trials: int) -> list[str]:
    sizes = [c for c in CHECKPOINTS if c < trials] + [trials]
    head = " | ".join(f"best at {n}" for n in sizes)
    lines = [
        f"| function | TPE | {head} | wins at {trials} | ms per trial (last 100) |",
        "|---|---|" + "---|" * len(sizes) + "---|---|",
    ]
    for function in FUNCTIONS:
        mine = {r.seed: r for r in runs if r.function == function and r.sampler == "window"}
        theirs = {r.seed: r for r in runs if r.function == function and r.sampler == "whole"}
        for kind, group, other in (("window", mine, theirs), ("whole study", theirs, mine)):
            bests = " | ".join(f"{median(r.best_at[n] for r in group.values()):.4g}" for n in sizes)
            wins = sum(group[s].best_at[trials] < other[s].best_at[trials] for s in group)
            ms = 1000 * median(r.sample_seconds for r in group.values())
            lines.append(f"| {function} | {kind} | {bests} | {wins} of {len(group)} | {ms:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    print("\n".join(render(compare(args.trials, args.seeds), args.trials)))


if __name__ == "__main__":
    main()
