"""Command start-up: what a user waits for before `sweep` answers, against `optuna studies`.

Each command runs as a fresh process on the same SQLite database (a finished tiny campaign's
registry rows and studies are written first, without training); wall time and peak resident
memory (the child's ``ru_maxrss``) are measured per run, runs interleaved, medians reported.
`python -c "import tensorflow"` is the reference for what a command that loads a model pays.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import log, median
from benchmarks.tables import table

__all__ = ["COMMANDS", "StartupResult", "render_section", "run_startup"]

# label -> argv after the interpreter; {url} is the database.
COMMANDS: dict[str, list[str]] = {
    "sweep --help": ["-m", "sweep", "--help"],
    "sweep best": ["-m", "sweep", "best", "--storage", "{url}"],
    "sweep models": ["-m", "sweep", "models", "--storage", "{url}"],
    "optuna studies": ["{optuna}", "studies", "--storage", "{url}"],
    'python -c "import tensorflow"': ["-c", "import tensorflow"],
}


@dataclass(frozen=True)
class StartupResult:
    command: str
    runs: int
    seconds: float  # median wall time
    peak_mib: float  # median peak resident memory of the process
    exit_code: int


def _seed_database(url: str) -> None:
    """A campaign with one promoted model per built-in, as `sweep best` would find it."""
    import optuna

    from storage import ModelCandidate, ModelRegistry

    storage = optuna.storages.RDBStorage(url)
    with ModelRegistry(url) as registry:
        for operation in ("add", "subtract", "multiply", "divide", "square", "sqrt"):
            study = optuna.create_study(storage=storage, study_name=f"arith.{operation}")
            study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=5)
            registry.promote_if_better(
                ModelCandidate(
                    campaign="arith", operation=operation, study_name=study.study_name,
                    trial_number=0, objective_value=0.5,
                    metrics={"test_mae": 0.0, "test_hit_rate": 1.0},
                    params={"architecture": "2-1 linear"}, model_bytes=b"PK" + bytes(4000),
                    keras_version="3.15.1", tensorflow_version="2.21.0",
                )
            )
    storage.engine.dispose()


# Forks the command from a small process, so the child's peak memory is its own (a child
# forked from this benchmark process would start out with this process's pages counted).
_LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
print(json.dumps([seconds, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


def _one_run(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak MiB and exit code of one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv],
        capture_output=True, text=True, env=env, check=True, timeout=600,
    )
    seconds, peak, code = json.loads(done.stdout)
    return float(seconds), float(peak), int(code)


def run_startup(workdir: Path, runs: int) -> list[StartupResult]:
    """Every command `runs` times, interleaved (a busy moment hits all of them alike)."""
    url = f"sqlite:///{workdir / 'startup.db'}"
    _seed_database(url)
    optuna_cli = shutil.which("optuna", path=str(Path(sys.executable).parent)) or "optuna"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    measured: dict[str, list[tuple[float, float, int]]] = {label: [] for label in COMMANDS}
    for round_ in range(runs):
        for label, template in COMMANDS.items():
            argv = [a.replace("{url}", url) for a in template]
            argv = [optuna_cli, *argv[1:]] if argv[0] == "{optuna}" else [sys.executable, *argv]
            measured[label].append(_one_run(argv, env))
        log(f"startup: round {round_ + 1}/{runs} done")
    return [
        StartupResult(
            command=label,
            runs=len(values),
            seconds=median(v[0] for v in values),
            peak_mib=median(v[1] for v in values),
            exit_code=max(v[2] for v in values),
        )
        for label, values in measured.items()
    ]


# --- the report ------------------------------------------------------------------------------


def render_section(results: Sequence[StartupResult]) -> list[str]:
    """Section 6 of BENCHMARKS.md: each command's wall time and peak memory."""
    if not results:
        return []
    reference = next((r for r in results if r.command.startswith("python -c")), None)
    optuna_cli = next((r for r in results if r.command == "optuna studies"), None)
    rows = []
    for r in results:
        versus = "—"
        if optuna_cli is not None and r is not optuna_cli and r.command.startswith("sweep"):
            versus = f"{r.seconds / optuna_cli.seconds:.2f}x"
        rows.append(
            [f"`{r.command}`", str(r.runs), f"{r.seconds:.2f}", f"{r.peak_mib:.0f}", versus,
             str(r.exit_code)]
        )
    lines = [
        "## 6. Command start-up",
        "",
        "Each command is a fresh process on the same SQLite database (six studies of five"
        " trials and a registry row per built-in), runs interleaved; medians of wall time and of"
        " the process's peak resident memory. `sweep --help`, `best` and `models` read SQL only"
        " and never start TensorFlow (tests/test_layers.py checks the import); target: under"
        " 1.5 s and 150 MB.",
        "",
        *table(
            ("command", "runs", "seconds", "peak MiB", "vs optuna studies", "exit code"), rows
        ),
    ]
    if reference is not None:
        lines += [
            "",
            f"For scale: importing TensorFlow alone takes {reference.seconds:.1f} s and"
            f" {reference.peak_mib:.0f} MiB here; before the house issue every `sweep` command"
            " paid it.",
        ]
    return lines
