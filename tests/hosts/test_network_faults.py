"""Workers on separate hosts (network namespaces on a bridge) against a PostgreSQL cluster of
their own, through real network faults: partitions shorter and longer than the patience, a
host that vanishes holding a slot lock, a frozen host, a database restart.

Each ends with the budget exact, nothing RUNNING and every registry entry whole; a worker cut
off for good says one line within the patience plus a margin (before the network bounds it
said nothing for 15 minutes and more).
"""

from __future__ import annotations

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
from _cluster import Cluster, postgresql_bin
from _lab import Lab
from _network import Host, Network, missing_tools
from optuna.trial import TrialState

from storage import Database

pytestmark = [pytest.mark.slow, pytest.mark.multihost]

PATIENCE = 12  # seconds: the worker's patience, and with it every network bound
MARGIN = 25  # noticing the silence (5 s here), the reachability checks, a loaded machine
TRIALS = 3
OPERATIONS = ("add", "multiply")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
_REPOSITORY = Path(__file__).resolve().parents[2]


# The fixtures live here, not in a conftest.py: a second conftest module would shadow
# tests/conftest.py for every `from conftest import ...` in the whole suite.
@pytest.fixture(scope="module")
def _lab_module() -> Iterator[tuple[Network, Cluster]]:
    reason = missing_tools() or (None if postgresql_bin() else "no PostgreSQL binaries")
    if reason is not None:
        if "CI" in os.environ:
            pytest.fail(f"{reason} (CI is set, so the multi-host suite must run)", pytrace=False)
        pytest.skip(reason)
    network = Network.create()
    try:
        cluster = Cluster.create(network.address)
        try:
            yield network, cluster
        finally:
            cluster.remove()
    finally:
        network.remove()


@pytest.fixture
def lab(_lab_module: tuple[Network, Cluster]) -> Iterator[Lab]:
    network, cluster = _lab_module
    cluster.recreate_database()
    made = Lab(network, cluster)
    try:
        yield made
    finally:
        for process in made.processes:  # never leave a process behind, whatever failed
            if process.poll() is None:
                process.kill()
                process.communicate()
        network.remove_hosts()


def _campaign(folder: Path) -> Path:
    """Two operations, a few trials each; a multiply trial trains for a few seconds."""
    path = folder / "campaign.toml"
    path.write_text(
        f"""
[campaign]
name = "hosts"
operations = {list(OPERATIONS)!r}
trials = {TRIALS}
pruner = "none"
startup_designs = false
stop_when_exact = false

[data]
examples = 600
test_examples = 200
extrapolation_examples = 200

[space]
family = ["mlp"]
epochs = 500
layers = 1
width = {{ low = 4, high = 8 }}
batch_size = [64]

[overrides.add]
epochs = 2
"""
    )
    return path


def _env(lab: Lab, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    env.update(
        SWEEP_STORAGE=lab.cluster.url,
        SWEEP_ARTIFACTS=str(folder / "artifacts"),
        SWEEP_DATABASE_PATIENCE=str(PATIENCE),
        SWEEP_HEARTBEAT_INTERVAL="1",
        SWEEP_GRACE_PERIOD="3",
        SWEEP_WORKERS="2",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def _worker(lab: Lab, host: Host, folder: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "sweep", "worker", "--config", str(_campaign(folder))]
    return lab.started(subprocess.Popen(
        host.command(command), env=_env(lab, folder), cwd=folder,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ))


def _studies(url: str) -> dict[str, optuna.Study]:
    """The studies, read over connections closed after use: the polls below call this five
    times a second, and a pooled engine per call held the small cluster's 40 connections."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(
        url, engine_kwargs={"poolclass": sqlalchemy.pool.NullPool}
    )
    return {op: optuna.load_study(study_name=f"hosts.{op}", storage=storage)
            for op in OPERATIONS}


def _training_trial(url: str, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until `process` has a multiply trial RUNNING (its objective started: training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            trials = _studies(url)["multiply"].get_trials(deepcopy=False)
        except (KeyError, sqlalchemy.exc.OperationalError,
                optuna.exceptions.StorageInternalError):
            trials = []
        if any(t.state == TrialState.RUNNING
               and str(t.user_attrs.get("worker", "")).endswith(f":{process.pid}")
               for t in trials):
            return
        time.sleep(0.2)
    pytest.fail("no trial started training in time")


def _finished(process: subprocess.Popen[str], timeout: float = 240) -> str:
    """Its stderr once it exited 0, with no traceback."""
    _, stderr = process.communicate(timeout=timeout)
    assert "Traceback" not in stderr, stderr
    assert process.returncode == 0, stderr
    return stderr


def _assert_sound(url: str) -> None:
    """The budget exact, nothing RUNNING or WAITING, every registry entry whole."""
    for op, study in _studies(url).items():
        found = [t.state for t in study.get_trials(deepcopy=False)]
        assert sum(s in COUNTED for s in found) == TRIALS, (op, found)
        assert TrialState.RUNNING not in found and TrialState.WAITING not in found, (op, found)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text(
                "SELECT id, sha256, size_bytes, model_bytes FROM sweep_model_versions"
            )).all()
            best = connection.execute(sqlalchemy.text(
                "SELECT operation, version_id FROM sweep_best"
            )).all()
    finally:
        engine.dispose()
    for row in rows:
        data = bytes(row.model_bytes)
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (row.sha256, row.size_bytes)
    assert {op for op, version in best if version in {row.id for row in rows}} == set(OPERATIONS)


def test_a_partition_shorter_than_the_patience_is_ridden_out(lab: Lab, tmp_path: Path) -> None:
    """Cut for 8 s (longer than the 5 s it takes to notice, shorter than the patience): the
    cut worker's trial is failed as stale and retried, the worker carries on, exit 0."""
    cut, other = lab.host(), lab.host()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    victim = _worker(lab, cut, tmp_path / "a")
    survivor = _worker(lab, other, tmp_path / "b")
    _training_trial(lab.cluster.url, victim)
    cut.cut()
    time.sleep(8)
    cut.restore()
    _finished(victim)
    _finished(survivor)
    _assert_sound(lab.cluster.url)


def test_a_partition_longer_than_the_patience_ends_the_worker_in_one_line(
    lab: Lab, tmp_path: Path
) -> None:
    """Cut for good: the worker says one line within the patience plus a margin (it said
    nothing for 15 minutes before); the other host finishes the budget."""
    cut, other = lab.host(), lab.host()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    victim = _worker(lab, cut, tmp_path / "a")
    survivor = _worker(lab, other, tmp_path / "b")
    _training_trial(lab.cluster.url, victim)
    cut.cut()
    started = time.monotonic()
    _, stderr = victim.communicate(timeout=PATIENCE + 5 * MARGIN)
    took = time.monotonic() - started
    print(f"\ncut-off worker exited {took:.1f} s after the partition (patience {PATIENCE} s)")
    assert victim.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sweep: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert f"gave up after {PATIENCE} s without the database" in errors[0], stderr
    assert took < PATIENCE + MARGIN, (took, stderr)
    _finished(survivor)
    _assert_sound(lab.cluster.url)


_HOLDER = """
import sys, time
from storage import Database
database = Database(sys.argv[1], patience=float(sys.argv[2]))
database.lock("hosts.add:slots").acquire()
print("held", flush=True)
time.sleep(3600)
"""


def test_a_host_that_vanishes_holding_a_slot_lock_stalls_the_others_seconds(
    lab: Lab, tmp_path: Path
) -> None:
    """A holder's host goes silent and dies with add's slot lock: the server notices its
    dead session within seconds (it waited for the kernel's two hours before), and the
    other host's worker finishes add's budget."""
    holder_host, other = lab.host(), lab.host()
    survivor = _worker(lab, other, tmp_path)
    _training_trial(lab.cluster.url, survivor)
    holder = lab.started(subprocess.Popen(
        holder_host.command([sys.executable, "-c", _HOLDER, lab.cluster.url, str(PATIENCE)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=_REPOSITORY,
    ))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder_host.cut()
    holder.kill()  # its close never reaches the server: the network is silent
    holder.wait()
    started = time.monotonic()
    with Database(lab.cluster.url, patience=PATIENCE) as database:
        database.lock("hosts.add:slots", timeout=300).acquire()
        stalled = time.monotonic() - started
    print(f"\na vanished holder's slot lock stalled the others {stalled:.1f} s")
    assert stalled < 60, stalled
    _finished(survivor)
    _assert_sound(lab.cluster.url)


def test_a_frozen_host_is_failed_as_stale_and_its_late_write_refused(
    lab: Lab, tmp_path: Path
) -> None:
    """SIGSTOP for 15 s mid-trial (longer than the grace period and the server's idle
    timeout), then SIGCONT: its trial was retried elsewhere, nothing is counted twice."""
    frozen, other = lab.host(), lab.host()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    victim = _worker(lab, frozen, tmp_path / "a")
    survivor = _worker(lab, other, tmp_path / "b")
    _training_trial(lab.cluster.url, victim)
    victim.send_signal(signal.SIGSTOP)
    time.sleep(15)
    victim.send_signal(signal.SIGCONT)
    _finished(victim)
    _finished(survivor)
    _assert_sound(lab.cluster.url)


def test_a_database_restart_with_two_hosts_mid_trial_is_ridden_out(
    lab: Lab, tmp_path: Path
) -> None:
    first, second = lab.host(), lab.host()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _worker(lab, first, tmp_path / "a")
    two = _worker(lab, second, tmp_path / "b")
    _training_trial(lab.cluster.url, one)
    lab.cluster.restart()
    _finished(one)
    _finished(two)
    _assert_sound(lab.cluster.url)
