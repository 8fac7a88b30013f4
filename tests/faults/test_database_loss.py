"""The database server disappears mid-sweep (PostgreSQL stopped), then comes back.

This module stops the shared local PostgreSQL server, so it runs alone in its own module and
always starts the server again (in a `finally`, and once more in a module teardown) and waits
until it answers before anything else runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fault_helpers import (
    assert_budget_exact,
    assert_one_line_error,
    assert_registry_whole,
    campaign_file,
    run_sweep,
    start_sweep,
    states,
    studies,
    sweep_env,
    wait_for_training_trial,
)
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.slow, pytest.mark.server]

PATIENCE = 8  # seconds a worker waits for the database before it gives up
PASSWORD = "Sup3rS3cret"
_CLUSTERS = Path("/etc/postgresql")


def _cluster() -> list[str]:
    """`pg_ctlcluster` arguments for the local cluster, or skip when there is none to control."""
    if shutil.which("pg_ctlcluster") is None or not _CLUSTERS.is_dir():
        pytest.skip("no local PostgreSQL cluster to stop and start (pg_ctlcluster)")
    versions = sorted(os.listdir(_CLUSTERS))
    if not versions:
        pytest.skip("no local PostgreSQL cluster under /etc/postgresql")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _ready() -> bool:
    return subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False
    ).returncode == 0


def _start_postgresql() -> None:
    """Start the cluster (a no-op when it runs) and wait until it accepts connections."""
    if not _ready():
        subprocess.run([*_cluster(), "start"], check=False, capture_output=True)
    deadline = time.monotonic() + 60
    while not _ready():
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back within 60 s")
        time.sleep(0.5)


def _stop_postgresql() -> None:
    subprocess.run([*_cluster(), "stop", "-m", "fast"], check=True, capture_output=True)
    assert not _ready()


@pytest.fixture(autouse=True, scope="module")
def _postgresql_left_running() -> Iterator[None]:
    yield
    if shutil.which("pg_ctlcluster") and _CLUSTERS.is_dir():
        _start_postgresql()


@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_the_database_disappears_mid_sweep_and_comes_back(
    server_url: str, tmp_path: Path
) -> None:
    """The worker retries with backoff for `PATIENCE` seconds, then exits with one clear line;
    every registry entry is whole; once the server is back, the same command resumes and the
    budget comes out exact."""
    _cluster()  # skip before starting anything when the server cannot be controlled
    config = campaign_file(tmp_path)
    # The server trusts local connections and ignores the password; no message may show it.
    with_password = make_url(server_url).set(password=PASSWORD)
    env = sweep_env(
        with_password.render_as_string(hide_password=False),
        tmp_path,
        SWEEP_DATABASE_PATIENCE=str(PATIENCE),
        SWEEP_HEARTBEAT_INTERVAL="1",
        SWEEP_GRACE_PERIOD="3",
    )
    command = ["run", "--config", str(config)]
    process = start_sweep(command, env, tmp_path)
    try:
        wait_for_training_trial(server_url, process)
        time.sleep(0.5)
        _stop_postgresql()
        stopped = time.monotonic()
        _, stderr = process.communicate(timeout=PATIENCE + 60)
        waited = time.monotonic() - stopped
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        _start_postgresql()

    assert process.returncode == 2, stderr
    assert PASSWORD not in stderr
    assert PATIENCE - 1 <= waited <= PATIENCE + 30, waited
    assert "database error, retrying" in stderr  # it did wait for the server first
    assert_one_line_error(stderr, f"gave up after {PATIENCE} s without the database")
    assert "Connection refused" in stderr.strip().splitlines()[-1]

    # Nothing half-written: add's model is whole, multiply's trial was never promoted.
    assert assert_registry_whole(server_url) == 1
    found = states(server_url)
    assert found["add"] == [TrialState.COMPLETE]
    assert found["multiply"] == [TrialState.RUNNING]  # nobody could record its end

    again = run_sweep(command, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert PASSWORD not in again.stderr + again.stdout
    assert_budget_exact(server_url, 1)
    assert_registry_whole(server_url)
    multiply = states(server_url)["multiply"]
    assert multiply[0] == TrialState.FAIL  # the heartbeat found it stale; its retry ran
    assert multiply.count(TrialState.COMPLETE) == 1


@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_a_short_database_restart_is_ridden_out(server_url: str, tmp_path: Path) -> None:
    """The server is down for a few seconds, well within the patience: the worker waits,
    reconnects and finishes the sweep by itself, exactly on budget. (The trial in flight
    could not record its end; the heartbeat fails it after the grace period and its retry
    runs, as for a crashed worker.)"""
    _cluster()
    config = campaign_file(tmp_path)
    env = sweep_env(
        server_url, tmp_path, SWEEP_DATABASE_PATIENCE="90", SWEEP_HEARTBEAT_INTERVAL="1",
        SWEEP_GRACE_PERIOD="3",
    )
    process = start_sweep(["run", "--config", str(config)], env, tmp_path)
    try:
        wait_for_training_trial(server_url, process)
        time.sleep(0.5)
        _stop_postgresql()
        time.sleep(4)
    finally:
        _start_postgresql()
    try:
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "database error, retrying" in stderr  # the outage was noticed, and ridden out
    assert_budget_exact(server_url, 1)
    assert_registry_whole(server_url)
    multiply = studies(server_url)["multiply"].trials
    assert [t.state for t in multiply] == [TrialState.FAIL, TrialState.COMPLETE]
    assert multiply[1].system_attrs.get("failed_trial") == multiply[0].number  # its retry
