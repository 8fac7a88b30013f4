"""Distributed sweeps with real worker processes on real PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from storage import Database, ModelRegistry

OPS = ("add", "multiply")


def _campaign_file(tmp_path: Path, trials: int, epochs: int = 2, examples: int = 600) -> Path:
    path = tmp_path / "campaign.toml"
    path.write_text(
        f"""
[campaign]
operations = {list(OPS)!r}
trials = {trials}
stop_when_exact = false
[data]
examples = {examples}
test_examples = 200
extrapolation_examples = 200
[space]
family = ["mlp"]
epochs = {epochs}
layers = {{ low = 0, high = 2 }}
"""
    )
    return path


def _env(url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "SWEEP_STORAGE": url, "SWEEP_CAMPAIGN": "dist", **extra}


def _start_workers(
    n: int, url: str, config: Path, **extra: str
) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "sweep", "worker", "--config", str(config)],
            env=_env(url, SWEEP_WORKERS=str(n), **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def _wait(processes: list[subprocess.Popen[str]], timeout: float = 400) -> list[str]:
    errors = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=timeout)
            if process.returncode not in (0, -signal.SIGKILL):
                errors.append(f"exit {process.returncode}: {stderr}")
            assert "Traceback" not in stderr, stderr
    finally:
        for process in processes:  # never leave a worker behind, whatever failed
            if process.poll() is None:
                process.kill()
                process.wait()
    assert not errors, errors
    return errors


def _studies(url: str) -> dict[str, optuna.Study]:
    return {
        op: optuna.load_study(study_name=f"dist.{op}", storage=url) for op in OPS
    }


def _assert_budget_exact(url: str, budget: int) -> None:
    for op, study in _studies(url).items():
        states = [t.state for t in study.get_trials(deepcopy=False)]
        counted = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
        assert counted == budget, (op, states)
        assert TrialState.RUNNING not in states, (op, states)
        assert TrialState.WAITING not in states, (op, states)


def _assert_registry_holds_true_best(url: str) -> None:
    with ModelRegistry(url) as registry:
        for op, study in _studies(url).items():
            complete = [
                t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            ]
            best = registry.best("dist", op)
            assert best is not None, op
            assert best.objective_value == pytest.approx(min(t.value for t in complete))
            versions = [e.version for e in registry.history("dist", op)]
            assert versions == list(range(1, len(versions) + 1))


@pytest.mark.slow
def test_three_workers_share_one_exact_budget(server_url: str, tmp_path: Path) -> None:
    """Three workers start at once, race to create the campaign, and fill 5 trials per op."""
    config = _campaign_file(tmp_path, trials=5)
    _wait(_start_workers(3, server_url, config))
    _assert_budget_exact(server_url, 5)
    _assert_registry_holds_true_best(server_url)


@pytest.mark.slow
def test_local_workers_on_sqlite(tmp_path: Path) -> None:
    """`sweep run --workers 2` on SQLite: WAL, busy timeout and a file lock keep it exact."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = _campaign_file(tmp_path, trials=4)
    result = subprocess.run(
        [sys.executable, "-m", "sweep", "run", "--workers", "2", "--config", str(config)],
        env=_env(url), capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "Best model per operation" in result.stdout
    _assert_budget_exact(url, 4)
    _assert_registry_holds_true_best(url)


@pytest.mark.slow  # a real process (or several): the slow tier
def test_local_workers_wait_for_the_go_and_leave_quietly_without_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`run --workers K` starts its workers before it prepares the campaign (their TensorFlow
    import overlaps its own); until the go they must not open the database, and when the
    preparation fails they must leave without a word (the parent prints the one error)."""
    from sweep.search.workers import LocalWorkers

    database = tmp_path / "never.db"
    workers = LocalWorkers(Database(f"sqlite:///{database}"), "dist", 2)
    try:
        time.sleep(3.0)  # well into their imports, past their reading of the environment
        assert all(p.poll() is None for p in workers.processes), "a worker did not wait"
        assert not database.exists()
    finally:
        workers.stop()
    assert [p.returncode for p in workers.processes] == [0, 0]
    assert not database.exists()
    assert capfd.readouterr().err == ""


def test_a_worker_with_parent_pid_set_by_hand_in_a_terminal_does_not_wait(tmp_path: Path) -> None:
    """SWEEP_PARENT_PID pointing at the shell it was typed in: no go will come on a terminal,
    so the worker goes on (here to the one-line error for a campaign that does not exist)."""
    import pty

    leader, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sweep", "worker"],
            env=_env(f"sqlite:///{tmp_path / 'none.db'}", SWEEP_PARENT_PID=str(os.getpid())),
            stdin=terminal, capture_output=True, text=True, timeout=120,
        )
    finally:
        os.close(terminal)
        os.close(leader)
    assert done.returncode == 2, done.stderr
    assert "does not exist" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a real process (or several): the slow tier
def test_run_with_workers_whose_campaign_cannot_be_prepared_says_one_line(
    tmp_path: Path,
) -> None:
    """The parent's preparation fails after its workers started: its one error line, exit 2,
    no word from the workers, and none of them is left running."""
    from sweep.nets.background import BackgroundTrainer
    from sweep.search.campaign import Campaign
    from sweep.search.config import CampaignConfig, config_from_toml, load_toml

    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    stored = config_from_toml(load_toml(_campaign_file(tmp_path, 1)), CampaignConfig())
    trainer = BackgroundTrainer(1, start=False)
    with Campaign(replace(stored, name="dist"), Database(url), trainer):
        pass  # created, never trained
    other = tmp_path / "other.toml"  # the same campaign with other data: refused
    other.write_text(_campaign_file(tmp_path, 1).read_text().replace(
        "examples = 600", "examples = 700"))
    done = subprocess.run(
        [sys.executable, "-m", "sweep", "run", "--workers", "2", "--config", str(other)],
        env=_env(url), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "already exists with a different data" in lines[0], done.stderr
    left = subprocess.run(["pgrep", "-f", "sweep worker --quiet"], capture_output=True,
                          text=True)
    assert left.stdout.strip() == "", "a worker outlived its parent"


def _wait_for_running_trial(url: str, pid: int | None = None, timeout: float = 120) -> None:
    """Until some trial (of process `pid`, if given) is RUNNING and has started training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for study in _studies(url).values():
                for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    worker = str(trial.user_attrs.get("worker", ""))
                    if pid is None or worker.endswith(f":{pid}"):
                        return
        except KeyError:
            pass  # studies not created yet
        time.sleep(0.2)
    pytest.fail("no trial started")


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_a_killed_worker_leaves_nothing_running(server_url: str, tmp_path: Path) -> None:
    """SIGKILL mid-trial: the heartbeat marks the trial failed, it is retried, budget exact."""
    config = _campaign_file(tmp_path, trials=4, epochs=300, examples=3000)
    fast_heartbeat = {"SWEEP_HEARTBEAT_INTERVAL": "1", "SWEEP_GRACE_PERIOD": "4"}
    victim, survivor = _start_workers(2, server_url, config, **fast_heartbeat)
    try:
        _wait_for_running_trial(server_url, pid=victim.pid)
    except BaseException:
        _wait([victim, survivor], timeout=0.1)
        raise
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _wait([survivor])
    _assert_budget_exact(server_url, 4)
    failed = [
        t for s in _studies(server_url).values()
        for t in s.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    ]
    assert failed, "the killed worker's trial should have been failed by the heartbeat"


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_workers_survive_terminated_connections(server_url: str, tmp_path: Path) -> None:
    """pg_terminate_backend on every worker connection, repeatedly: the sweep still completes."""
    config = _campaign_file(tmp_path, trials=5, epochs=150, examples=2000)
    workers = _start_workers(2, server_url, config)
    database = sqlalchemy.engine.make_url(server_url).database
    admin = sqlalchemy.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test", poolclass=sqlalchemy.NullPool
    )
    terminated = 0
    stop = threading.Event()

    def terminate() -> None:
        # The first round at once, while the first trial runs: the whole sweep may take only
        # a few seconds more, and a round that comes after it proves nothing.
        nonlocal terminated
        while True:
            with admin.connect() as connection:
                terminated += len(connection.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all())
            if stop.wait(1.0):
                return

    _wait_for_running_trial(server_url)
    thread = threading.Thread(target=terminate, daemon=True)
    thread.start()
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=400)
            assert worker.returncode == 0, stderr
    finally:
        stop.set()
        thread.join()
        admin.dispose()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert terminated > 0
    _assert_budget_exact(server_url, 5)


def test_local_workers_get_a_core_each_only_when_they_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sweep import settings
    from sweep.search.workers import worker_cores

    cores = sorted(os.sched_getaffinity(0))
    assert worker_cores(1) is None  # one worker keeps every core
    assert worker_cores(len(cores)) == cores
    assert worker_cores(len(cores) + 1) is None  # more workers than cores: the OS places them
    monkeypatch.setenv("SWEEP_PIN_WORKERS", "0")
    settings.refresh()
    assert worker_cores(len(cores)) is None
    monkeypatch.delenv("SWEEP_PIN_WORKERS")
    settings.refresh()


_PINNED = """
import os, sys
from sweep.nets._runtime import configure_tensorflow
from sweep.search.workers import pin_to_assigned_core
configure_tensorflow(1)
import tensorflow as tf
print(pin_to_assigned_core())
tf.constant(1.0) + 1.0  # TF's thread pools start after pinning: they must inherit it
masks = {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
print(sorted(sorted(m) for m in masks))
"""


@pytest.mark.slow  # a real process (or several): the slow tier
def test_a_pinned_worker_keeps_all_its_threads_on_its_core() -> None:
    core = max(os.sched_getaffinity(0))
    env = {**os.environ, "SWEEP_WORKER_CORE": str(core)}
    done = subprocess.run(
        [sys.executable, "-c", _PINNED], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2:] == [str(core), str([[core]])]


def test_native_thread_sizes_are_the_workers_share_unless_the_user_set_them() -> None:
    from sweep.search.placement import NATIVE_THREAD_VARS, native_thread_env

    assert native_thread_env(1, {}) == {name: "1" for name in NATIVE_THREAD_VARS}
    assert "OMP_NUM_THREADS" not in native_thread_env(1, {"OMP_NUM_THREADS": "3"})


_BLAS_THREADS = """
import os
from sweep.search.workers import pin_to_assigned_core
import numpy as np  # loaded before the pinning, as in `sweep worker`
print(pin_to_assigned_core())
print(len(os.listdir("/proc/self/task")))
a = np.random.default_rng(0).normal(size=(2000, 20))
np.linalg.lstsq(a, a[:, 0], rcond=None)
"""


def _threads_after_numpy(env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _BLAS_THREADS], env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-2:]


def test_a_pinned_worker_has_no_second_blas_thread_on_its_core() -> None:
    """NumPy loads before a worker pins itself, so OpenBLAS would start a thread per core and
    they would busy-wait on the one core (lstsq 66x slower, measured): the parent sizes the
    pool through the environment it gives each worker."""
    from sweep.search.placement import native_thread_env, threads_per_worker

    cores = sorted(os.sched_getaffinity(0))
    core = cores[-1]
    base = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    base["SWEEP_WORKER_CORE"] = str(core)
    workers = max(2, len(cores))
    sized = _threads_after_numpy({**base, **native_thread_env(threads_per_worker(workers))})
    assert sized == [str(core), "1"]  # the main thread alone: no OpenBLAS helper thread
    if len(cores) > 1:  # the test can see the fault: unsized, OpenBLAS adds its threads
        unsized = _threads_after_numpy(base)
        assert unsized[0] == str(core) and int(unsized[1]) > 1, unsized
