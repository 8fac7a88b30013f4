"""The image's entry point (compose/entrypoint.py) as a plain process: exit 2 is final.

No container is needed: the entry point is a Python script that runs `sweep` from PATH. The
restart policy is tested twice: with a stand-in `sweep` on PATH that exits with the codes a
test chooses (fast), and with the real `sweep worker` on a bad campaign file, an unreachable
database that comes up later, a worker killed by SIGKILL (as the OOM killer does) and a
SIGTERM (what `docker compose stop` and Kubernetes send).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from _servers import drop_server_database, make_server_database, require_server
from _serving import free_port
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "compose" / "entrypoint.py"
VENV_BIN = Path(sys.executable).parent

SMALL_CAMPAIGN = """
[campaign]
operations = ["add"]
trials = {trials}
timeout = 240
stop_when_exact = false
[data]
examples = 600
test_examples = 200
extrapolation_examples = 200
[space]
epochs = 2
layers = {{ low = 0, high = 1 }}
"""

# A stand-in for `sweep`: exits with the FAKE_CODES code of its run (the last one repeats),
# counting runs in ./runs; FAKE_SLEEP makes each run last that long (it can be signalled).
FAKE_SWEEP = f"""#!{sys.executable}
import os, pathlib, signal, sys, time
runs = pathlib.Path("runs")
run = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(run + 1))
pathlib.Path("pid").write_text(str(os.getpid()))
print("fake sweep", sys.argv[1:], "run", run, file=sys.stderr, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
codes = os.environ.get("FAKE_CODES", "0").split(",")
sys.exit(int(codes[min(run, len(codes) - 1)]))
"""


def load_entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweep_image_entrypoint", ENTRYPOINT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWEEP_", "WORKER_"))}
    return {**env, "WORKER_RESTART_DELAY": "0.2", **extra}


@pytest.fixture
def fake_sweep(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "sweep"
    script.write_text(FAKE_SWEEP, encoding="utf-8")
    script.chmod(0o755)
    return folder


def run_fake(folder: Path, cwd: Path, *args: str, timeout: float = 60, **env: str
             ) -> subprocess.CompletedProcess[str]:
    environment = base_env(
        PATH=f"{folder}:{os.environ['PATH']}", SWEEP_STORAGE=f"sqlite:///{cwd / 'x.db'}", **env
    )
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args], cwd=cwd, env=environment,
        capture_output=True, text=True, timeout=timeout,
    )


def runs(cwd: Path) -> int:
    return int((cwd / "runs").read_text())


# --- the policy, with a stand-in sweep ----------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "expected_exit", "expected_runs"),
    [
        ("0", 0, 1),  # every budget met
        ("2", 2, 1),  # a configuration error: final
        ("130", 130, 1),  # stopped: final
        ("1,0", 0, 2),  # a crash, then success
        ("-9,0", 0, 2),  # killed (the OOM killer), then success
        ("1,1,1,1", 1, 4),  # WORKER_RESTARTS=3: three restarts, then give up
    ],
    ids=["done", "config-error", "interrupted", "crash-once", "killed-once", "crash-always"],
)
def test_exit_codes_decide_restarts(
    fake_sweep: Path, tmp_path: Path, codes: str, expected_exit: int, expected_runs: int
) -> None:
    if codes.startswith("-9"):
        # The stand-in kills itself with SIGKILL on its first run.
        script = fake_sweep / "sweep"
        script.write_text(
            FAKE_SWEEP.replace(
                'codes = os.environ', 'run == 0 and os.kill(os.getpid(), 9)\ncodes = os.environ'
            ),
            encoding="utf-8",
        )
        codes = "0"
    result = run_fake(fake_sweep, tmp_path, "worker", "--config", "c.toml",
                      FAKE_CODES=codes, WORKER_RESTARTS="3")
    assert result.returncode == expected_exit, result.stderr
    assert runs(tmp_path) == expected_runs, result.stderr
    if expected_exit == 2:
        assert "configuration error" in result.stderr and "not restarting" in result.stderr


def test_exit_2_while_the_database_is_down_is_waited_out_then_final(
    fake_sweep: Path, tmp_path: Path
) -> None:
    """Exit 2 with the database unreachable is an outage: wait for it, give up after the wait."""
    closed = free_port()  # nothing listens there
    result = run_fake(
        fake_sweep, tmp_path, "worker", "--storage",
        f"postgresql+psycopg://sweep@127.0.0.1:{closed}/sweep",
        FAKE_CODES="2", WORKER_DATABASE_WAIT="3",
    )
    assert result.returncode == 2, result.stderr
    assert runs(tmp_path) == 1
    assert "the database does not answer" in result.stderr
    assert "did not answer within 3 s" in result.stderr


def test_sigterm_is_forwarded_and_nothing_restarts(fake_sweep: Path, tmp_path: Path) -> None:
    env = base_env(PATH=f"{fake_sweep}:{os.environ['PATH']}", FAKE_SLEEP="60",
                   SWEEP_STORAGE=f"sqlite:///{tmp_path / 'x.db'}")
    process = subprocess.Popen([sys.executable, str(ENTRYPOINT), "worker"], cwd=tmp_path,
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "pid").exists(), 30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        _kill(process)
    assert process.returncode == 130, stderr
    assert runs(tmp_path) == 1
    assert not _alive(int((tmp_path / "pid").read_text()))


def test_sigterm_during_the_restart_delay_ends_it_at_once(
    fake_sweep: Path, tmp_path: Path
) -> None:
    env = base_env(PATH=f"{fake_sweep}:{os.environ['PATH']}", FAKE_CODES="1",
                   WORKER_RESTART_DELAY="60", SWEEP_STORAGE=f"sqlite:///{tmp_path / 'x.db'}")
    process = subprocess.Popen([sys.executable, str(ENTRYPOINT), "worker"], cwd=tmp_path,
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "restarting it in 60 s" in line:
                break
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    finally:
        _kill(process)
    assert time.monotonic() - started < 5
    assert process.returncode == 130
    assert runs(tmp_path) == 1


def test_other_commands_replace_the_entry_point(fake_sweep: Path, tmp_path: Path) -> None:
    """`serve`, `dashboard`, `best`, ...: exec'd, so the PID, signals and exit code are sweep's."""
    env = base_env(PATH=f"{fake_sweep}:{os.environ['PATH']}", FAKE_CODES="3")
    process = subprocess.Popen([sys.executable, str(ENTRYPOINT), "serve", "--port", "8500"],
                               cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 3, stderr
    assert int((tmp_path / "pid").read_text()) == process.pid
    assert "['serve', '--port', '8500']" in stderr
    assert runs(tmp_path) == 1


def test_no_arguments_means_worker(fake_sweep: Path, tmp_path: Path) -> None:
    result = run_fake(fake_sweep, tmp_path, FAKE_CODES="0")
    assert result.returncode == 0
    assert "fake sweep ['worker'] run 0" in result.stderr


# --- the pieces -------------------------------------------------------------------------------


def test_storage_url_is_the_one_sweep_worker_uses() -> None:
    entrypoint = load_entrypoint()
    env = {"SWEEP_STORAGE": "postgresql://from-env/db"}
    assert entrypoint.storage_url(["--config", "x"], env) == "postgresql://from-env/db"
    assert entrypoint.storage_url(["--storage", "sqlite:///a.db"], env) == "sqlite:///a.db"
    assert entrypoint.storage_url(["--storage=sqlite:///b.db"], env) == "sqlite:///b.db"
    assert entrypoint.storage_url([], {"SWEEP_STORAGE": "  "}) == "sqlite:///sweeps.db"


def test_database_answers_only_distinguishes_an_outage(tmp_path: Path) -> None:
    entrypoint = load_entrypoint()
    assert entrypoint.database_answers(f"sqlite:///{tmp_path / 'x.db'}")
    assert not entrypoint.database_answers(
        f"postgresql+psycopg://sweep@127.0.0.1:{free_port()}/sweep"
    )
    # A malformed URL is a configuration error, not an outage: nothing to wait for.
    assert entrypoint.database_answers("nosuchdb://x")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "100000 100000\n"}, 1.0),
        ({"cpu.max": "250000 100000\n"}, 2.5),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
    ids=["v2-none", "v2-one", "v2-fraction", "v1-half", "v1-none", "no-cgroup"],
)
def test_cpu_limit_from_the_cgroup(
    tmp_path: Path, files: dict[str, str], expected: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert load_entrypoint().cpu_limit(tmp_path) == expected


def test_a_cpu_limit_sets_the_workers_threads() -> None:
    threads = load_entrypoint().thread_environment
    assert threads({}, 16, None) == {}
    assert threads({}, 16, 1.0) == {
        "SWEEP_WORKERS": "16", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    assert threads({"OMP_NUM_THREADS": "4"}, 16, 2.0)["SWEEP_WORKERS"] == "8"
    assert "OMP_NUM_THREADS" not in threads({"OMP_NUM_THREADS": "4"}, 16, 2.0)
    assert threads({}, 16, 0.5)["SWEEP_WORKERS"] == "16"  # at least one thread
    assert threads({}, 4, 8.0) == {}  # a limit above the cores changes nothing
    assert threads({"SWEEP_WORKERS": "4"}, 16, 1.0) == {}  # set by hand (compose): kept


# --- with the real `sweep worker` ---------------------------------------------------------------


def run_entrypoint(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = base_env(PATH=f"{VENV_BIN}:{os.environ['PATH']}", **env)
    return subprocess.Popen([sys.executable, str(ENTRYPOINT), *args], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_bad_campaign_file_is_final_with_the_real_worker(tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text('[campaign]\noperations = ["no_such_operation"]\n', encoding="utf-8")
    process = run_entrypoint(tmp_path, "worker", "--config", str(config),
                             SWEEP_STORAGE=f"sqlite:///{tmp_path / 'sweeps.db'}")
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        _kill(process)
    assert process.returncode == 2, stderr
    assert stderr.count("sweep: error:") == 1, stderr  # one run, no restart
    assert "unknown operation 'no_such_operation'" in stderr
    assert "not restarting it" in stderr


def _counted_trials(url: str, study: str) -> tuple[int, int]:
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).trials
    states = optuna.trial.TrialState
    counted = [t for t in trials if t.state in (states.COMPLETE, states.PRUNED)]
    running = [t for t in trials if t.state == states.RUNNING]
    return len(counted), len(running)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_worker_is_restarted_and_finishes_the_budget(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer's signal) mid-run: restarted, and the budget ends exact."""
    config = tmp_path / "sweep.toml"
    config.write_text(SMALL_CAMPAIGN.format(trials=4), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    process = run_entrypoint(
        tmp_path, "worker", "--config", str(config), "--campaign", "killed",
        SWEEP_STORAGE=url, SWEEP_HEARTBEAT_INTERVAL="2", SWEEP_GRACE_PERIOD="4",
        SWEEP_ARTIFACTS=str(tmp_path / "artifacts"),
    )
    try:
        first = _wait_for(lambda: _child_of(process.pid), 60)
        # Kill it once it is working: a trial is RUNNING in the database.
        _wait_for(lambda: (tmp_path / "sweeps.db").exists() and _has_running_trial(url), 240)
        os.kill(first, signal.SIGKILL)
        _, stderr = process.communicate(timeout=480)
    finally:
        _kill(process)
    assert process.returncode == 0, stderr
    assert "killed by SIGKILL); restarting it" in stderr
    assert _counted_trials(url, "killed.add") == (4, 0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_stops_the_real_worker_cleanly_without_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(SMALL_CAMPAIGN.format(trials=500), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    process = run_entrypoint(tmp_path, "worker", "--config", str(config), "--campaign", "stop",
                             SWEEP_STORAGE=url, SWEEP_ARTIFACTS=str(tmp_path / "artifacts"))
    try:
        child = _wait_for(lambda: _child_of(process.pid), 60)
        _wait_for(lambda: (tmp_path / "sweeps.db").exists() and _has_running_trial(url), 240)
        process.send_signal(signal.SIGTERM)  # what tini passes on from `docker compose stop`
        _, stderr = process.communicate(timeout=120)
    finally:
        _kill(process)
    assert process.returncode == 130, stderr
    assert "not restarting it" in stderr
    assert not _alive(child)
    assert _counted_trials(url, "stop.add")[1] == 0  # the trial in flight was failed, not left


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    require_server("postgresql")
    url = make_server_database("postgresql")
    try:
        yield url
    finally:
        drop_server_database("postgresql", url)


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_database_that_comes_up_late_is_waited_for(
    postgresql_url: str, tmp_path: Path
) -> None:
    """The worker's first start finds no database (exit 2); the entry point waits, the database
    comes up (a proxy starts forwarding to the real PostgreSQL) and the sweep runs to its end."""
    real = make_url(postgresql_url)
    port = free_port()
    late = real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    config = tmp_path / "sweep.toml"
    config.write_text(SMALL_CAMPAIGN.format(trials=2), encoding="utf-8")
    proxy = _LateProxy(port, real.host or "127.0.0.1", real.port or 5432, delay=8.0)
    proxy.start()
    process = run_entrypoint(tmp_path, "worker", "--config", str(config), "--campaign", "late",
                             SWEEP_STORAGE=late, SWEEP_ARTIFACTS=str(tmp_path / "artifacts"))
    try:
        _, stderr = process.communicate(timeout=480)
    finally:
        _kill(process)
        proxy.stop()
    assert process.returncode == 0, stderr
    assert "cannot reach database" in stderr  # the first start: exit 2
    assert "the database does not answer; waiting" in stderr
    assert "the database answers again" in stderr
    assert _counted_trials(postgresql_url, "late.add") == (2, 0)


# --- helpers ----------------------------------------------------------------------------------


class _LateProxy:
    """A TCP port that refuses connections for `delay` seconds, then forwards them."""

    def __init__(self, port: int, host: str, target_port: int, delay: float) -> None:
        self.port, self.target, self.delay = port, (host, target_port), delay
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def serve(self) -> None:
        if self.stopping.wait(self.delay):
            return
        with socket.create_server(("127.0.0.1", self.port)) as server:
            server.settimeout(0.2)
            while not self.stopping.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self.target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def _wait_for(condition, seconds: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"not within {seconds} s")


def _child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _has_running_trial(url: str) -> bool:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return bool(connection.execute(
                sqlalchemy.text("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'")
            ).scalar())
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_the_entry_points_exit_codes_are_sweeps() -> None:
    """The image's scripts import nothing of sweep's CLI; the codes they rely on must agree."""
    from storage.urls import DEFAULT_STORAGE_URL
    from sweep.cli.main import EXIT_INTERRUPTED, EXIT_USAGE

    entrypoint = load_entrypoint()
    assert entrypoint.EXIT_USAGE == EXIT_USAGE == 2
    assert entrypoint.EXIT_INTERRUPTED == EXIT_INTERRUPTED == 130
    assert entrypoint.DEFAULT_STORAGE == DEFAULT_STORAGE_URL
