"""Interrupting `sweep run`: Ctrl-C, SIGTERM and SIGKILL mid-trial, then resuming.

The campaign sweeps add (quick trials, finished and promoted first) then multiply, whose trial
is interrupted while it trains.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from _fault_helpers import (
    CAMPAIGN,
    assert_budget_exact,
    assert_registry_whole,
    campaign_file,
    run_main,
    run_sweep,
    start_sweep,
    states,
    studies,
    sweep_env,
    wait_for_training_trial,
)
from optuna.trial import TrialState

from storage import ModelRegistry
from sweep.search._signals import interrupting_signal

# A warning line, after the timestamp that lines carry off a terminal.
_WARNING = re.compile(r"^(?:\S+Z )?warning:")

pytestmark = pytest.mark.slow

# A stopped sweep must be gone this soon after the signal (TensorFlow's teardown included).
EXIT_SECONDS = 15


def _history(url: str) -> list[tuple[str, int, str]]:
    with ModelRegistry(url) as registry:
        return [(e.operation, e.version, e.sha256) for e in registry.history(CAMPAIGN)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_trial_fails_that_trial_keeps_the_rest_and_resumes_exactly(
    signum: signal.Signals, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = campaign_file(tmp_path)
    env = sweep_env(url, tmp_path)
    command = ["run", "--config", str(config)]
    process = start_sweep(command, env, tmp_path)
    victim = wait_for_training_trial(url, process)
    kept = _history(url)
    assert [op for op, _, _ in kept] == ["add"], "add's trial should have promoted a model"

    time.sleep(0.5)  # into the training loop
    process.send_signal(signum)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < EXIT_SECONDS
    assert process.returncode != 0
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("sweep: interrupted;"), stderr
    assert sum("interrupted" in line for line in lines) == 1, stderr
    assert not any(_WARNING.match(line) for line in lines), stderr

    assert states(url) == {"add": [TrialState.COMPLETE], "multiply": [TrialState.FAIL]}
    failed = studies(url)["multiply"].trials[0]
    assert failed.number == victim.number
    assert failed.user_attrs["fail_reason"] == f"interrupted by {signum.name}"
    assert _history(url) == kept

    again = run_sweep(command, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert_budget_exact(url, 1)
    assert states(url)["multiply"] == [TrialState.FAIL, TrialState.COMPLETE]
    assert_registry_whole(url)
    history = _history(url)
    assert history[: len(kept)] == kept  # promoted models survive the interruption
    assert [op for op, _, _ in history] == ["add", "multiply"]


def test_sigterm_to_a_run_with_local_workers_stops_them_all(tmp_path: Path) -> None:
    """`sweep run --workers 2` (as under `docker stop`): the parent passes the stop on to its
    workers, each fails its trial with the reason, and one line says what happened."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = campaign_file(tmp_path)
    env = sweep_env(url, tmp_path)
    command = ["run", "--workers", "2", "--config", str(config)]
    process = start_sweep(command, env, tmp_path)
    wait_for_training_trial(url, process, own=False)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < EXIT_SECONDS
    assert process.returncode != 0
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert sum("interrupted" in line for line in lines) == 1, stderr
    assert lines[-1].startswith("sweep: interrupted;"), stderr
    found = states(url)
    assert TrialState.RUNNING not in found["add"] + found["multiply"], found
    assert found["multiply"] == [TrialState.FAIL]
    reason = studies(url)["multiply"].trials[0].user_attrs["fail_reason"]
    assert reason == "interrupted by SIGINT"  # what the parent sends its workers
    assert_registry_whole(url)
    # Resuming is the same as after a single-process run (above); two more TensorFlow
    # processes on a small machine would only make this test slow.


def _processes_on(url: str) -> list[int]:
    """Processes (other than this one) whose environment names storage `url`: the workers."""
    wanted = f"SWEEP_STORAGE={url}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.parametrize(("how", "delay"), [
    ("SIGTERM", 1.0), ("Ctrl-C", 1.0), ("SIGTERM", 3.0), ("Ctrl-C", 3.0),
])
def test_a_stop_while_local_workers_start_ends_them_all(
    how: str, delay: float, tmp_path: Path
) -> None:
    """The workers of `run --workers 2` start before the campaign is prepared and wait for the
    parent's go: a stop then (SIGTERM to the parent alone, or Ctrl-C to the whole group) must
    end every process within seconds, with one line and no trial left RUNNING."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    env = sweep_env(url, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", "--workers", "2", "--config",
         str(campaign_file(tmp_path))],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    time.sleep(delay)
    if how == "SIGTERM":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    sent = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        left = _processes_on(url)
        for pid in left:  # never leave a worker behind, whatever failed
            os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - sent < EXIT_SECONDS
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert sum("interrupted" in line for line in stderr.splitlines()) == 1, stderr
    assert left == [], "a worker outlived the stopped run"
    try:
        found = states(url)
    except KeyError:  # stopped before the parent had created the studies
        found = {}
    assert all(TrialState.RUNNING not in s for s in found.values()), found


def test_a_killed_sweep_is_cleaned_up_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL mid-trial on SQLite: the trial stays RUNNING until the next `sweep run` sees its
    heartbeat is stale, fails it and runs the retry Optuna queues; the budget is exact."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = campaign_file(tmp_path)
    env = sweep_env(url, tmp_path, SWEEP_HEARTBEAT_INTERVAL="1", SWEEP_GRACE_PERIOD="3")
    command = ["run", "--config", str(config)]
    process = start_sweep(command, env, tmp_path)
    victim = wait_for_training_trial(url, process)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    # Stuck, as after a crash or a lost machine.
    assert states(url) == {"add": [TrialState.COMPLETE], "multiply": [TrialState.RUNNING]}

    again = run_sweep(command, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert_budget_exact(url, 1)
    assert_registry_whole(url)
    trials = studies(url)["multiply"].get_trials(deepcopy=False)
    assert trials[victim.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == trials[victim.number].params  # the killed trial, run again


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_optuna_creates_the_trial_ends_it_failed_not_running(
    signum: int, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Study.ask` has stored the new trial RUNNING, and Optuna has not yet entered the block
    that fails a trial on KeyboardInterrupt: the signal arrives exactly then (in process)."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    ask = optuna.Study.ask

    def ask_then_signal(self: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        trial = ask(self, *args, **kwargs)
        signal.raise_signal(signum)
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask_then_signal)
    config = campaign_file(tmp_path)
    done = run_main(["run", "--config", str(config)], sweep_env(url, tmp_path), tmp_path, capsys)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert states(url)["add"] == [TrialState.FAIL], done.stderr
    reason = studies(url)["add"].trials[0].user_attrs["fail_reason"]
    assert reason == f"interrupted by {signal.Signals(signum).name}"
    # The command is over: a program that embeds it and goes on to run a campaign through the
    # library (which installs no handlers) passes the campaign loop's first checkpoint
    # (`raise_if_interrupted`, which would end this whole pytest run instead of failing).
    assert interrupting_signal() is None
