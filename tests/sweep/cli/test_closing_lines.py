"""The closing line of `sweep worker` and `sweep run` gives the study's best, read at the end,
not the worker's own last view: two workers on one study print one value."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep import settings
from sweep.cli import main
from sweep.publishing.format import format_value
from sweep.search.reporting import OperationStatus

CAMPAIGN = """
[campaign]
name = "closing"
operations = ["add"]
trials = 1
pruner = "none"
startup_designs = false

[data]
examples = 300
test_examples = 100
extrapolation_examples = 100

[space]
family = ["mlp"]
epochs = 2
layers = 1
width = { low = 2, high = 4 }
batch_size = [64]
"""


@pytest.mark.parametrize("command", ["worker", "run"])
def test_the_closing_best_is_the_studys_not_this_workers_last_view(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another worker's better trial ends after this worker's last look at the study (here:
    added right after this worker's own trial was reported); the closing line shows it."""
    from sweep.cli.display import LogReporter

    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    (tmp_path / "campaign.toml").write_text(CAMPAIGN)
    added: list[float] = []
    reported = LogReporter.trial_finished

    def another_worker_finishes_a_better_trial(
        self: LogReporter, status: OperationStatus
    ) -> None:
        reported(self, status)
        if added:
            return
        own = status.best_value
        better = own / 2 if own else -1.0  # below anything this worker saw
        study = optuna.load_study(study_name=status.study_name, storage=url)
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, values=[better] * len(study.directions)
            )
        )
        added.append(better)

    monkeypatch.setattr(LogReporter, "trial_finished", another_worker_finishes_a_better_trial)
    for name in [n for n in os.environ if n.startswith("SWEEP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SWEEP_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = main([command, "--config", "campaign.toml", "--storage", url])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        monkeypatch.undo()
        settings.refresh()
    _, err = capsys.readouterr()
    assert code == 0, err
    assert added, err
    # Off a terminal: "<ISO 8601 UTC time> add: ..."
    closing = [line.split(" ", 1)[1] for line in err.splitlines() if " add: 2 trials" in line]
    assert closing == [
        f"add: 2 trials counted, best validation error {format_value(added[0])}; "
        "stopped: budget met"
    ], err
