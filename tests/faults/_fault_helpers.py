"""Shared pieces of the fault suite: tiny campaigns, `sweep` processes, and the invariants a
fault must never break (exact budgets, nothing left RUNNING, a registry with whole entries)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from sweep import settings
from sweep.cli import main

CAMPAIGN = "faults"
OPERATIONS = ("add", "multiply")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def campaign_file(
    folder: Path,
    *,
    trials: int = 1,
    epochs: int = 1500,
    quick_add: bool = True,
    name: str = "campaign.toml",
) -> Path:
    """A tiny campaign over add then multiply; a multiply trial trains for a few seconds.

    No startup designs and no pruner, so a multiply trial trains all `epochs` epochs and a
    signal sent a moment after it starts lands mid-training. With `quick_add`, add's trials
    train 2 epochs: they finish (and promote) first, in a second or two.
    """
    path = folder / name
    quick = "\n[overrides.add]\nepochs = 2\n" if quick_add else ""
    path.write_text(
        f"""
[campaign]
name = "{CAMPAIGN}"
operations = {list(OPERATIONS)!r}
trials = {trials}
pruner = "none"
startup_designs = false
stop_when_exact = false

[data]
examples = 600
test_examples = 200
extrapolation_examples = 200

[space]
family = ["mlp"]
epochs = {epochs}
layers = 1
width = {{ low = 4, high = 8 }}
batch_size = [64]
{quick}"""
    )
    return path


def sweep_env(url: str, folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a `sweep` process: storage, its own artifact folder, quiet TF."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    env.update(
        SWEEP_STORAGE=url, SWEEP_ARTIFACTS=str(folder / "artifacts"), TF_CPP_MIN_LOG_LEVEL="3"
    )
    env.update(extra)
    return env


def start_sweep(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sweep", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_sweep(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def kept_affinity() -> Iterator[None]:
    """Put back this process's cores afterwards: `sweep worker` in this process pins every
    thread to ``$SWEEP_WORKER_CORE`` (`pin_to_assigned_core`), and the rest of the session must
    not run on one core."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    try:
        yield
    finally:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(int(tid), cores)


def run_main(
    args: list[str], env: dict[str, str], cwd: Path, capsys: pytest.CaptureFixture[str]
) -> subprocess.CompletedProcess[str]:
    """`run_sweep` in this process: `sweep.cli.main(args)` with `env` as the environment and
    `cwd` as the working folder, both put back afterwards.

    For what a command prints and returns, where the process itself is not the point (no
    signal, no start-up, nothing below `main`). `main` re-reads the environment; `run` and
    `worker` install their stop-signal handlers, which are put back too, as are the cores a
    worker pins itself to (`sweep.cli.run`, not called here, is what may leave through
    `os._exit`).
    """
    capsys.readouterr()  # what came before is not this command's
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.MonkeyPatch.context() as patch, kept_affinity():
        for name in os.environ.keys() - env.keys():
            patch.delenv(name)
        for name, value in env.items():
            if os.environ.get(name) != value:
                patch.setenv(name, value)
        patch.chdir(cwd)
        try:
            code = main(args)
        except SystemExit as exit_:  # argparse's own refusals
            code = exit_.code if isinstance(exit_.code, int) else 2
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    settings.refresh()  # the environment as it is again, for whatever runs next
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["sweep", *args], code, out, err)


def studies(url: str, operations: tuple[str, ...] = OPERATIONS) -> dict[str, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return {
        op: optuna.load_study(study_name=f"{CAMPAIGN}.{op}", storage=url) for op in operations
    }


def wait_for_training_trial(
    url: str,
    process: subprocess.Popen[str],
    *,
    operation: str = "multiply",
    own: bool = True,
    timeout: float = 120,
) -> FrozenTrial:
    """The RUNNING trial of `process` (of any process unless `own`) in `operation`'s study.

    A trial carries the user attribute ``worker`` = ``host:pid`` from the moment its objective
    starts, so this returns while the trial is being built and trained.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"sweep exited early with {process.returncode}:\n{stderr}")
        try:
            study = studies(url, (operation,))[operation]
            trials = study.get_trials(deepcopy=False)
        except (KeyError, sqlalchemy.exc.OperationalError):
            trials = []  # not created yet, or SQLite busy: look again
        for trial in trials:
            worker = str(trial.user_attrs.get("worker", ""))
            if trial.state == TrialState.RUNNING and worker and (
                not own or worker.endswith(f":{process.pid}")
            ):
                return trial
        time.sleep(0.2)
    process.kill()
    process.communicate()
    pytest.fail("no trial started training in time")


def states(url: str, operations: tuple[str, ...] = OPERATIONS) -> dict[str, list[TrialState]]:
    return {
        op: [t.state for t in study.get_trials(deepcopy=False)]
        for op, study in studies(url, operations).items()
    }


def assert_budget_exact(url: str, budget: int, operations: tuple[str, ...] = OPERATIONS) -> None:
    """COMPLETE + PRUNED == budget for every operation; nothing RUNNING or WAITING."""
    for op, found in states(url, operations).items():
        assert sum(s in COUNTED for s in found) == budget, (op, found)
        assert TrialState.RUNNING not in found, (op, found)
        assert TrialState.WAITING not in found, (op, found)


def assert_registry_whole(url: str) -> int:
    """Every stored model's bytes hash to its recorded sha256 and size; every current best
    points to a stored row. Returns how many model versions there are."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(
                    "SELECT id, campaign, operation, version, sha256, size_bytes, model_bytes "
                    "FROM sweep_model_versions"
                )
            ).all()
            best = connection.execute(
                sqlalchemy.text("SELECT campaign, operation, version_id FROM sweep_best")
            ).all()
    finally:
        engine.dispose()
    ids = {row.id for row in rows}
    for row in rows:
        data = bytes(row.model_bytes)
        assert hashlib.sha256(data).hexdigest() == row.sha256, (row.operation, row.version)
        assert len(data) == row.size_bytes, (row.operation, row.version)
        assert data[:2] == b"PK", (row.operation, row.version)  # a whole .keras zip
    for campaign, operation, version_id in best:
        assert version_id is None or version_id in ids, (campaign, operation, version_id)
    return len(rows)


def assert_one_line_error(stderr: str, *expected: str) -> str:
    """No traceback; the last line is the one `sweep: error: ...` line, naming `expected`."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    errors = [line for line in lines if line.startswith("sweep: error:")]
    assert len(errors) == 1, stderr
    assert lines[-1] == errors[0], stderr
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]
