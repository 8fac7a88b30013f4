"""The scheduler's trial loop under stop signals that land between Optuna's own steps."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweep import settings
from sweep.cli import main

CAMPAIGN = """
[campaign]
name = "signals"
operations = ["add"]
trials = 3
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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_optuna_creates_the_trial_ends_it_failed_not_running(
    signum: int, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Study.ask` has stored the new trial RUNNING, and Optuna has not yet entered the block
    that fails a trial on KeyboardInterrupt: the signal arrives exactly then."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    (tmp_path / "campaign.toml").write_text(CAMPAIGN)
    ask = optuna.Study.ask

    def ask_then_signal(self: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        trial = ask(self, *args, **kwargs)
        signal.raise_signal(signum)
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask_then_signal)
    for name in [n for n in os.environ if n.startswith("SWEEP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SWEEP_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = main(["run", "--config", "campaign.toml", "--storage", url])
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        monkeypatch.undo()
        settings.refresh()
    _, err = capsys.readouterr()
    assert code == 130, err
    assert "Traceback" not in err, err
    [study] = optuna.get_all_study_summaries(url)
    trials = optuna.load_study(study_name=study.study_name, storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL], err
    assert trials[0].user_attrs["fail_reason"] == f"interrupted by {signal.Signals(signum).name}"
