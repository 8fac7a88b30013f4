"""Round two of the fault suite: secrets, exposure, resource exhaustion, one-line errors.

Each test reproduces one reported case (the issue's numbering is in its docstring); the checks
are on the class of the case, not only the reported example. A command's message and exit code
are checked in this process (`sweep.cli.main`); real `sweep` processes stay where the process
is the point: a server that is stopped by a signal, Ctrl-C during start-up, a process's peak
memory, what reaches file descriptor 2, a worker's parent process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from _fault_helpers import assert_one_line_error, run_main, run_sweep, start_sweep, sweep_env
from _serving import free_port

from storage import ModelCandidate, ModelRegistry

_ESC = "\x1b"


def _registry_with(url: str, data: bytes, **fields: object) -> None:
    with ModelRegistry(url) as registry:
        values: dict[str, object] = dict(
            campaign="arith", operation="add", study_name="arith.add", trial_number=0,
            objective_value=0.5, metrics={"test_hit_rate": 1.0},
            params={"architecture": "2-1 linear"}, model_bytes=data,
            keras_version="3.15.1", tensorflow_version="2.21.0",
        )
        values.update(fields)
        registry.promote_if_better(ModelCandidate(**values))  # type: ignore[arg-type]


# --- 6. passwords with '@' -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:MyQ@SecretZ@127.0.0.1/db",
        "mysql://root:Qz9@Wk7@127.0.0.1:3306/test",
        "postgresql+psycopg://u:Zq1@Vx2@Ty3@host.invalid:5432/db?sslmode=disable",
    ],
)
@pytest.mark.parametrize(
    "args",
    [["best"], ["run", "--ops", "add", "--trials", "1"], ["dashboard", "--port", "0"],
     ["report"], ["models"]],
    ids=["best", "run", "dashboard", "report", "models"],
)
def test_no_part_of_a_password_with_an_at_sign_is_ever_shown(
    url: str, args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 6: a password with '@' was masked only up to its first '@'."""
    password = url.split("://", 1)[1].split("@")[0].split(":", 1)[1]
    secret_parts = [url.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]]
    secret_parts += secret_parts[0].split("@")
    for how in ("flag", "environment"):
        env = sweep_env(url, tmp_path)
        cli = [*args, "--storage", url] if how == "flag" else args
        done = run_main(cli, env, tmp_path, capsys)
        assert done.returncode == 2, done.stderr
        assert_one_line_error(done.stderr, "%40")
        for part in secret_parts:
            assert part not in done.stdout + done.stderr, (part, done.stderr)
    assert password


# --- 7. the dashboard beyond loopback -------------------------------------------------------


def test_the_dashboard_needs_a_flag_beyond_loopback_and_is_read_only_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 7: `dashboard --host 0.0.0.0` started silently, and anyone who reached it could
    delete studies (DELETE /api/studies/1 -> 204)."""
    import optuna

    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(storage=url, study_name="arith.add")
    env = sweep_env(url, tmp_path)
    refused = run_main(["dashboard", "--host", "0.0.0.0", "--port", "0"], env, tmp_path, capsys)
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "--allow-remote")
    port = free_port()  # a real process: it serves until a signal stops it
    server = start_sweep(
        ["dashboard", "--host", "0.0.0.0", "--allow-remote", "--port", str(port)], env, tmp_path
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as reply:
                    studies = json.load(reply)["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.communicate()
                time.sleep(0.1)
        assert [s["study_name"] for s in studies] == ["arith.add"]
        request = urllib.request.Request(f"{base}/api/studies/1", method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 403
        assert "read-only" in json.loads(caught.value.read())["error"]
        assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["arith.add"]
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "reachable from other machines" in stderr and "read-only" in stderr


# --- 8. terminal injection -------------------------------------------------------------------


def test_escape_sequences_and_markup_never_reach_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 8: ANSI/OSC-8 sequences came through an expression's comment and registry strings;
    rich markup in a value (SWEEP_ARTIFACTS='out/[/bold]x') crashed the run."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    osc = f"{_ESC}]8;;http://evil.example{_ESC}\\click{_ESC}]8;;{_ESC}\\"
    env = sweep_env(url, tmp_path)
    for expression in (f"x=a*b # {_ESC}[31mred{osc}", f"x=a*q # {_ESC}[31mred{osc}"):
        done = run_main(["run", "--expr", expression], env, tmp_path, capsys)
        assert done.returncode == 2
        assert _ESC not in done.stderr and "\\x1b" in done.stderr
    config = tmp_path / "c.toml"
    config.write_text('[expressions]\nx = "a*b # \\u001b[31m"\n')
    done = run_main(["run", "--config", str(config)], env, tmp_path, capsys)
    assert done.returncode == 2 and _ESC not in done.stderr
    _registry_with(url, b"PK" + bytes(100), params={"architecture": f"{_ESC}[2J[bold]wipe"},
                   study_name=f"arith.add{_ESC}[5m")
    shown = run_main(["best"], sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith"), tmp_path, capsys)
    assert shown.returncode == 0, shown.stderr
    assert _ESC not in shown.stdout + shown.stderr
    assert "[bold]wipe" in shown.stdout  # shown as text, not applied
    history = run_main(["models"], sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith"), tmp_path,
                       capsys)
    assert history.returncode == 0 and _ESC not in history.stdout
    markup = sweep_env(f"sqlite:///{tmp_path / 'm.db'}", tmp_path,
                       SWEEP_ARTIFACTS=str(tmp_path / "out/[/bold]x"))
    run = run_main(["run", "--ops", "add", "--trials", "1"], markup, tmp_path, capsys)
    assert run.returncode == 0, run.stderr
    assert "MarkupError" not in run.stderr and "Traceback" not in run.stderr


# --- 9, 11. config files and echoed values ----------------------------------------------------


@pytest.mark.timeout(300)  # (reading a FIFO would block: a bound, as a process had)
def test_config_files_are_read_with_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 9: `--config /dev/zero` reached 13 GB, a 50 MB TOML 4 GB, a FIFO hung, deep
    nesting gave a RecursionError traceback."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    with big.open("w") as handle:
        handle.write("# " + "x" * (50 << 20) + "\n")
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    env = sweep_env(f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
    expected = {
        "/dev/zero": "not a regular file",
        str(fifo): "not a regular file",
        str(big): "at most",
        str(deep): "too deeply",
        "/proc/self/status": "not valid TOML",
    }
    for path, message in expected.items():
        for command in (["run", "--config", path], ["worker", "--config", path]):
            started = time.monotonic()
            done = run_main(command, env, tmp_path, capsys)
            assert done.returncode == 2, (path, done.stderr)
            assert_one_line_error(done.stderr, message)
            assert time.monotonic() - started < 30
    assert not (tmp_path / "c.db").exists()  # refused before anything was written


def test_echoed_values_are_cut_and_workers_are_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 11: a 50 MB campaign name came back in one 50 MB line; `--workers` had no bound."""
    env = sweep_env(f"sqlite:///{tmp_path / 'e.db'}", tmp_path)
    huge = "x" * 100_000  # the most one argument or variable may hold is 128 KiB
    for args in (["best", "--campaign", huge], ["run", "--ops", huge], ["run", "--trials", huge],
                 ["run", "--expr", f"{huge}=a*b"], ["pull", huge]):
        done = run_main(args, env, tmp_path, capsys)
        assert done.returncode == 2, args[:1]
        assert len(done.stderr) < 2000, (args[0], len(done.stderr))
    done = run_main(["run", "--workers", "100000"], env, tmp_path, capsys)
    assert done.returncode == 2 and "allowed 1 to 64" in done.stderr
    big = sweep_env(f"sqlite:///{tmp_path / 'e.db'}", tmp_path, SWEEP_CAMPAIGN=huge)
    done = run_main(["best"], big, tmp_path, capsys)
    assert done.returncode == 2 and len(done.stderr) < 2000


# --- 10. registry entries as bombs ------------------------------------------------------------


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _huge_dense_config() -> bytes:
    layer = {
        "module": "keras.layers", "class_name": "Dense", "name": "d",
        "config": {"name": "d", "units": 100_000_000, "dtype": "float64"},
        "build_config": {"input_shape": [None, 2]},
    }
    return json.dumps({"module": "keras.src.models.functional", "class_name": "Functional",
                       "config": {"layers": [layer]}}).encode()


@pytest.fixture
def bombs() -> dict[str, Callable[[], bytes]]:
    """Each bomb built when asked for: the config and assets ones compress 1 GiB and 510 MiB."""
    return {
        "units": lambda: _archive({"config.json": _huge_dense_config(), "metadata.json": b"{}",
                                   "model.weights.h5": b""}),
        "config": lambda: _archive({"config.json": b" " * (1 << 30), "metadata.json": b"{}"}),
        "assets": lambda: _archive({"config.json": _huge_dense_config()[:10],
                                    **{f"assets/{i}": b"\0" * (255 << 20) for i in range(2)}}),
    }


@pytest.mark.parametrize("bomb", ["units", "config", "assets"])
def test_registry_bombs_are_refused_before_keras_sees_them(
    bomb: str, bombs: dict[str, Callable[[], bytes]], tmp_path: Path
) -> None:
    """Case 10: units=1e8 took 6 GB before safe mode refused it; a 1 MB zip with a 1 GiB
    config.json took 2.75 GB; 255 MiB assets members wrote to TMPDIR. Round three: each is
    refused by a check that needs no Keras: `pull` answers before TensorFlow starts."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    _registry_with(url, bombs[bomb]())  # checksums are right: the registry is not what is lied to
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith", TMPDIR=str(scratch))
    # A real process per command: its peak memory is what is measured. VmHWM, not ru_maxrss:
    # Linux carries ru_maxrss over from the (big) forking test process.
    script = (
        "import sys\n"
        "from sweep.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print('tensorflow' in sys.modules, file=sys.stderr)\n"
        "print(int(peak.split()[1]) // 1024, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    for args in (["pull", "add"], ["predict", "add", "1", "2"]):
        done = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 2, done.stderr
        *lines, tensorflow, peak = done.stderr.strip().splitlines()
        assert_one_line_error("\n".join(lines), "limit" if bomb != "assets" else "unexpected")
        # Both check the archive before TensorFlow starts.
        assert tensorflow == "False", args
        assert int(peak) < 300, f"peak {peak} MiB"  # TensorFlow alone is ~650 MiB
        written = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
        assert written < 1 << 20
    assert not (tmp_path / "add.keras").exists()


# --- 13. OS errors on output -------------------------------------------------------------------


@pytest.fixture
def small_mounts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A full tmpfs and a read-only one (root only, as the export fault tests)."""
    mounts = {"full": tmp_path / "full", "readonly": tmp_path / "ro"}
    for path in mounts.values():
        path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                           str(mounts["full"])], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={mounts['full'] / 'filler'}", "bs=1k",
                        "count=1000"], capture_output=True, check=False)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                        str(mounts["readonly"])], check=True)
        yield mounts
    finally:
        for path in mounts.values():
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_os_errors_on_output_are_one_line(
    tmp_path: Path, small_mounts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 13: a read-only file system, a full disk, a name too long and /proc/self/fd/N
    gave tracebacks for `pull -o` and `report -o`."""
    import optuna

    from sweep.nets.saving import serialize_model

    keras = pytest.importorskip("keras")
    inputs = keras.Input(shape=(2,), dtype="float64")
    data = serialize_model(keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(inputs)))
    url = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(storage=url, study_name="arith.add")
    _registry_with(url, data)
    subprocess.run(["mount", "-o", "remount,ro", str(small_mounts["readonly"])], check=True)
    env = sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith")
    long_name = "x" * 300
    targets = {
        small_mounts["readonly"]: "read-only",
        small_mounts["full"]: "disk is full",
        tmp_path / long_name[:250]: "too long",
    }
    for folder, message in targets.items():
        for args in (["pull", "add", "-o", f"{folder}/{long_name if 'long' in message else 'm'}"
                      ".keras"], ["report", "-o", f"{folder}/report.html"]):
            if message == "too long":
                args[-1] = str(tmp_path / (long_name + (".keras" if args[0] == "pull" else "")))
            done = run_main(args, env, tmp_path, capsys)
            assert done.returncode == 2, (args, done.stderr)
            assert_one_line_error(done.stderr, message)


# --- 15. storage failures during set-up ------------------------------------------------------


def test_storage_failures_during_set_up_write_nothing_and_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 15: another application's SQLite file got our tables and a campaign row before
    the run failed; a newer Optuna schema was handled by `dashboard` only."""
    foreign = tmp_path / "app.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{foreign}")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE customers (id INTEGER)"))
    engine.dispose()
    env = sweep_env(f"sqlite:///{foreign}", tmp_path)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    for args in (["run", "--ops", "add", "--trials", "1"], ["worker", "--config", str(empty)],
                 ["best"]):
        done = run_main(args, env, tmp_path, capsys)
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line_error(done.stderr, "another application")
    inspector = sqlalchemy.inspect(sqlalchemy.create_engine(f"sqlite:///{foreign}"))
    assert inspector.get_table_names() == ["customers"]

    newer = tmp_path / "newer.db"
    import optuna

    optuna.create_study(storage=f"sqlite:///{newer}", study_name="arith.add")
    engine = sqlalchemy.create_engine(f"sqlite:///{newer}")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v9.0.0.a'"))
    engine.dispose()
    env = sweep_env(f"sqlite:///{newer}", tmp_path)
    for args in (["run", "--ops", "add", "--trials", "1"], ["report"], ["dashboard", "--port",
                                                                      "0"]):
        done = run_main(args, env, tmp_path, capsys)
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line_error(done.stderr, "newer.db")
    tables = sqlalchemy.inspect(sqlalchemy.create_engine(f"sqlite:///{newer}")).get_table_names()
    assert not [t for t in tables if t.startswith("sweep_")]


def test_a_full_disk_during_set_up_is_one_line(
    small_mounts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env = sweep_env(f"sqlite:///{small_mounts['full'] / 's.db'}", small_mounts["full"])
    done = run_main(["run", "--ops", "add", "--trials", "1"], env, Path("/tmp"), capsys)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr)


# --- 16. Ctrl-C in the first seconds -----------------------------------------------------------


@pytest.mark.parametrize(
    "delay",
    # 2.5 s is inside the TensorFlow import, the reported case; 5.0 s is mostly waiting.
    [0.3, 0.6, 1.0, 2.5, pytest.param(5.0, marks=pytest.mark.slow)],
)
def test_ctrl_c_at_any_moment_of_start_up_is_clean(delay: float, tmp_path: Path) -> None:
    """Case 16: Ctrl-C in the first seconds printed a KeyboardInterrupt traceback from inside
    the TensorFlow import. (Not before 0.3 s: Python's own start-up, before any line of the
    sweep runs, shows Python's traceback; docs/reliability.md says so.)"""
    env = sweep_env(f"sqlite:///{tmp_path / 'i.db'}", tmp_path)
    for args in (["run", "--ops", "add", "--trials", "2"], ["pull", "add"]):
        process = start_sweep(args, env, tmp_path)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert "Traceback" not in stderr, (delay, args, stderr)
        assert process.returncode in (130, 2, 0), (process.returncode, stderr)


# --- 17. small ones ------------------------------------------------------------------------------


def test_small_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Case 17: SWEEP_PARENT_PID=abc (traceback) and =1 (silent 130); `timeout = inf` in TOML;
    `sqlite:///:memory:` shown as %3Amemory%3A."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    done = run_main(["worker"], sweep_env(url, tmp_path, SWEEP_PARENT_PID="abc"), tmp_path,
                    capsys)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, "SWEEP_PARENT_PID='abc'")
    # A real worker process: =1 is about the worker's parent, and this process's parent could
    # be 1 (when whatever started pytest has gone).
    done = run_sweep(["worker"], sweep_env(url, tmp_path, SWEEP_PARENT_PID="1"), tmp_path)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, "not this worker's parent")
    config = tmp_path / "inf.toml"
    for key in ("timeout", "max_trial_seconds"):
        config.write_text(f"[campaign]\n{key} = inf\n")
        done = run_main(["run", "--config", str(config)], sweep_env(url, tmp_path), tmp_path,
                        capsys)
        assert done.returncode == 2
        assert_one_line_error(done.stderr, key)
    done = run_main(["best", "--storage", "sqlite:///:memory:"], sweep_env(url, tmp_path),
                    tmp_path, capsys)
    assert "sqlite:///:memory:" in done.stderr and "%3A" not in done.stderr


def test_a_database_on_a_read_only_mount_can_still_be_read(
    tmp_path: Path, small_mounts: dict[str, Path], trained_model_bytes: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Case 17: a SQLite database on a read-only mount could not even be read (WAL)."""
    folder = small_mounts["readonly"]
    url = f"sqlite:///{folder / 'r.db'}"
    _registry_with(url, trained_model_bytes)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    env = sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith")
    shown = run_main(["best"], env, tmp_path, capsys)
    assert shown.returncode == 0, shown.stderr
    assert "add" in shown.stdout
    pulled = run_main(["pull", "add", "-o", str(tmp_path / "add.keras")], env, tmp_path, capsys)
    assert pulled.returncode == 0, pulled.stderr
    refused = run_main(["run", "--ops", "add", "--trials", "1"], env, tmp_path, capsys)
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr)


@pytest.mark.slow  # a real process (or several): the slow tier
def test_library_warnings_do_not_leak_into_the_output(tmp_path: Path) -> None:
    """Case 17: warnings from matplotlib, NumPy, zipfile and Keras leaked into the output.

    Real processes: what reaches a process's stderr is the point (pytest captures warnings in
    this one)."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    done = run_sweep(["run", "--ops", "add", "--trials", "2"], sweep_env(url, tmp_path),
                     tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    report = run_sweep(["report", "-o", str(tmp_path / "r.html")], sweep_env(url, tmp_path),
                       tmp_path, timeout=300)
    assert report.returncode == 0, report.stderr
    for output in (done.stderr, report.stderr, report.stdout):
        assert "Warning" not in output, output


@pytest.fixture(scope="module")
def trained_model_bytes() -> bytes:
    keras = pytest.importorskip("keras")
    from sweep.nets.saving import serialize_model

    inputs = keras.Input(shape=(2,), dtype="float64")
    return serialize_model(keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(inputs)))
