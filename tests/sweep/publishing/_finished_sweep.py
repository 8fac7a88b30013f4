"""A small real sweep (add, multiply; 3 trials each) run once through the CLI, with its study
notes and artifacts published, shared by the dashboard and report tests.

Each test module wraps `finished_sweep` in its own module-scoped fixture; the sweep itself runs
once per session (about 30 s), since nothing in those tests changes what it wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

SMALL = """
[data]
examples = 600
test_examples = 200
extrapolation_examples = 200
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""
OPERATIONS = ("add", "multiply")
CAMPAIGN = "arith"


@dataclass(frozen=True)
class FinishedSweep:
    folder: Path
    url: str
    artifacts: Path

    @property
    def study_names(self) -> list[str]:
        return [f"{CAMPAIGN}.{op}" for op in OPERATIONS]


_cache: dict[str, FinishedSweep] = {}


def sweep_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWEEP_ARTIFACTS": str(cwd / "artifacts")}
    env.pop("SWEEP_STORAGE", None)
    env.pop("SWEEP_CAMPAIGN", None)
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


def finished_sweep(factory: pytest.TempPathFactory) -> FinishedSweep:
    if "sweep" in _cache:
        return _cache["sweep"]
    folder = factory.mktemp("finished-sweep")
    (folder / "small.toml").write_text(SMALL)
    url = f"sqlite:///{folder / 'sweeps.db'}"
    result = sweep_cli(
        "run", "--ops", ",".join(OPERATIONS), "--trials", "3", "--config", "small.toml",
        "--storage", url, cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    artifacts = folder / "artifacts"
    publish_all(url, artifacts)
    _cache["sweep"] = FinishedSweep(folder, url, artifacts)
    return _cache["sweep"]


def publish_all(url: str, artifacts: Path) -> None:
    """What the campaign does after each promotion, done here for each operation's best."""
    from storage import Database
    from sweep.nets.training import KerasTrainer
    from sweep.problem.data import make_dataset
    from sweep.publishing.notes import publish_best
    from sweep.search.config import load_campaign_config

    with Database(url) as database:
        config = load_campaign_config(database.campaigns, CAMPAIGN)
        assert config is not None
        for operation in config.resolved_operations():
            entry, data = database.registry.fetch(CAMPAIGN, operation.name)
            study = optuna.load_study(study_name=entry.study_name, storage=url)
            publish_best(
                study, entry.trial_number, entry, KerasTrainer().load(data, label="best"),
                make_dataset(operation, config.data), artifacts,
            )
