"""The image's HEALTHCHECK (compose/healthcheck.py), against real `sweep serve`, `sweep dashboard`
and worker processes: serve is healthy (ready) only once a model is loaded."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from _serving import free_port, start_server, sweep_command

ROOT = Path(__file__).resolve().parent.parent
HEALTHCHECK = ROOT / "compose" / "healthcheck.py"


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweep_image_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True,
                          text=True, timeout=60)


# --- finding the sweep process ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "role", "url"),
    [
        (["/usr/local/bin/python", "/usr/local/bin/sweep", "serve", "--host", "0.0.0.0",
          "--port", "8500"], "serve", "http://127.0.0.1:8500"),
        (["python", "-m", "sweep", "serve", "--port=9000"], "serve", "http://127.0.0.1:9000"),
        (["/usr/local/bin/sweep", "serve"], "serve", "http://127.0.0.1:8500"),
        (["sweep", "serve", "--host", "10.1.2.3"], "serve", "http://10.1.2.3:8500"),
        (["sweep", "serve", "--host", "::1", "--port", "81"], "serve", "http://[::1]:81"),
        (["python", "/usr/local/bin/sweep", "dashboard", "--host", "0.0.0.0", "--allow-remote",
          "--port", "8080", "--artifacts", "/artifacts"], "dashboard", "http://127.0.0.1:8080"),
        (["python", "/usr/local/bin/sweep", "worker", "--config", "/etc/sweep/sweep.toml"],
         "worker", None),
    ],
)
def test_the_command_line_names_the_role_and_its_address(
    argv: list[str], role: str, url: str | None
) -> None:
    module = load_healthcheck()
    found = module.parse_command_line(7, argv)
    assert found is not None and found.role == role
    if url is not None:
        assert module.base_url(found) == url


@pytest.mark.parametrize(
    "argv",
    [
        ["python", "/usr/local/lib/sweep-image/entrypoint.py", "worker"],  # the entry point
        ["python", "/usr/local/bin/sweep", "best"],  # not a service
        ["python", "-c", "import sweep"],
        ["sweep"],
    ],
)
def test_other_processes_are_not_taken_for_the_service(argv: list[str]) -> None:
    assert load_healthcheck().parse_command_line(7, argv) is None


def test_the_first_running_sweep_process_is_found(tmp_path: Path) -> None:
    """In a container: PID 1 is tini (compose) or the entry point; zombies are skipped."""
    module = load_healthcheck()
    processes = {
        1: (["/sbin/docker-init", "--", "python", "/usr/local/lib/sweep-image/entrypoint.py",
             "worker"], "S"),
        7: (["python", "/usr/local/lib/sweep-image/entrypoint.py", "worker"], "S"),
        8: (["python", "/usr/local/bin/sweep", "worker", "--config", "/x.toml"], "Z"),
        9: (["python", "/usr/local/bin/sweep", "worker", "--config", "/y.toml"], "R"),
    }
    for pid, (argv, state) in processes.items():
        folder = tmp_path / str(pid)
        folder.mkdir()
        (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (folder / "stat").write_text(f"{pid} (python) {state} 1 1 1")
    (tmp_path / "self").mkdir()
    found = module.find_sweep_process(tmp_path)
    assert found is not None and (found.pid, found.role) == (9, "worker")
    assert found.option("--config") == "/y.toml"
    (tmp_path / "9" / "stat").write_text("9 (python) Z 1 1 1")
    assert module.find_sweep_process(tmp_path) is None


# --- real processes ---------------------------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.slow  # a real server process
def test_serve_is_ready_only_once_a_model_is_loaded(tmp_path: Path) -> None:
    from _hand_models import exact_add, promote

    from storage import ModelRegistry

    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    with ModelRegistry(url):
        pass  # the registry exists, with no model in it
    server = start_server(url, tmp_path, "--poll", "0.5")
    try:
        pid = str(server.process.pid)
        assert httpx.get(f"{server.base}/healthz").status_code == 200  # /healthz alone: ok
        result = healthcheck("--pid", pid)
        assert result.returncode == 1, result.stdout
        assert "no model loaded yet" in result.stdout
        assert healthcheck("--pid", pid, "--live").returncode == 0

        promote(url, "add", exact_add(), 1.0)
        deadline = time.monotonic() + 300
        while (result := healthcheck("--pid", pid)).returncode != 0:
            assert time.monotonic() < deadline, result.stdout
            time.sleep(0.5)
        assert "serving add v1" in result.stdout
    finally:
        assert server.stop() == 0


def test_serve_that_does_not_answer_is_unhealthy(tmp_path: Path) -> None:
    """A `sweep serve` command line whose port nobody answers on (a stand-in process)."""
    fake = tmp_path / "sweep"
    fake.write_text("import time; time.sleep(60)\n")
    port = free_port()
    process = subprocess.Popen([sys.executable, str(fake), "serve", "--port", str(port)])
    try:
        time.sleep(0.3)
        for live in ([], ["--live"]):
            result = healthcheck("--pid", str(process.pid), *live)
            assert result.returncode == 1 and "unhealthy" in result.stdout
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow  # a real server process
def test_dashboard_is_healthy_when_its_api_answers(tmp_path: Path) -> None:
    from storage import ModelRegistry

    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    with ModelRegistry(url):
        pass
    (tmp_path / "artifacts").mkdir()
    port = free_port()
    process = subprocess.Popen(
        [*sweep_command(), "dashboard", "--storage", url, "--port", str(port), "--artifacts",
         str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while (result := healthcheck("--pid", str(process.pid))).returncode != 0:
            assert process.poll() is None, "the dashboard exited"
            assert time.monotonic() < deadline, result.stdout
            time.sleep(0.3)
        assert f"127.0.0.1:{port}/api/studies: 200" in result.stdout
        assert healthcheck("--pid", str(process.pid), "--live").returncode == 0
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = healthcheck("--pid", str(process.pid))
    assert result.returncode == 1


def test_a_worker_is_healthy_while_its_process_runs(tmp_path: Path) -> None:
    fake = tmp_path / "sweep"
    fake.write_text("import time; time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(fake), "worker", "--config", "x.toml"])
    try:
        time.sleep(0.3)
        result = healthcheck("--pid", str(process.pid))
        assert result.returncode == 0 and "sweep worker" in result.stdout
    finally:
        process.kill()
    time.sleep(0.3)  # killed but not reaped yet: a zombie is not a running worker
    assert healthcheck("--pid", str(process.pid)).returncode == 1
    process.wait()
    assert healthcheck("--pid", str(process.pid)).returncode == 1
