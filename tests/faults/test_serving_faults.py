"""Faults of the prediction service and of the exports: what `sweep serve` and `sweep pull
--format` do when a promoted model cannot be served, the database goes away while serving, the
port is taken, or an extra is missing. docs/reliability.md lists each with what the user sees.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import keras
import pytest
import sqlalchemy
from _hand_models import exact_add, promote
from _servers import admin_url
from _serving import Server, free_port, start_server, sweep_command, wait_for_version
from sqlalchemy.engine import make_url

from storage import ModelCandidate, ModelRegistry
from sweep.nets.saving import serialize_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PASSWORD = "s3rve-Secret-77"


def _lambda_model() -> bytes:
    inputs = keras.Input(shape=(2,))
    crafted = keras.Model(inputs, keras.layers.Lambda(lambda t: t[:, :1] + t[:, 1:])(inputs))
    return serialize_model(crafted)


def _promote_bytes(url: str, data: bytes, objective: float) -> None:
    with ModelRegistry(url) as registry:
        entry = registry.promote_if_better(
            ModelCandidate(
                campaign="arith", operation="add", study_name="arith.add", trial_number=9,
                objective_value=objective, metrics={}, params={}, model_bytes=data,
                keras_version=keras.__version__, tensorflow_version="2",
            )
        )
    assert entry is not None


def _answer(server: Server) -> httpx.Response:
    return httpx.post(f"{server.base}/v1/models/add:predict",
                      json={"instances": [[2, 3]]}, timeout=30)


def _wait_for_log(server: Server, text: str, within: float = 300) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in server.logged():
            return
        time.sleep(0.3)
    pytest.fail(f"{text!r} never appeared in the log:\n{server.logged()}")


def test_a_promoted_model_that_cannot_be_served_leaves_the_old_one_serving(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    promote(url, "add", exact_add(bias=0.25), 1.0)
    server = start_server(url, tmp_path, "--poll", "0.5")
    try:
        assert _answer(server).json() == {"predictions": [5.25], "model_version": 1}
        _promote_bytes(url, _lambda_model(), 0.5)  # version 2: a Lambda layer
        _wait_for_log(server, "add version 2 cannot be served")
        assert "safe mode" in server.logged() and "still serving version 1" in server.logged()
        response = _answer(server)
        assert response.json() == {"predictions": [5.25], "model_version": 1}
        status = httpx.get(f"{server.base}/v1/models/add").json()
        assert status["model_version"] == 1
        assert "version 2 cannot be served" in status["model_version_status"][0]["status"][
            "error_message"]

        # Version 3 has bytes that no longer match their checksum.
        promote(url, "add", exact_add(), 0.25)
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(
                "UPDATE sweep_model_versions SET model_bytes = :b WHERE version = 3"
            ), {"b": b"PK\x03\x04 flipped"})
        engine.dispose()
        _wait_for_log(server, "add version 3 cannot be served")
        assert "corrupt" in server.logged()
        assert _answer(server).json()["model_version"] == 1

        promote(url, "add", exact_add(), 0.125)  # version 4 is whole again: it is picked up
        wait_for_version(server, "add", 4)
        assert _answer(server).json() == {"predictions": [5.0], "model_version": 4}
        assert server.process.poll() is None
    finally:
        assert server.stop() == 0, server.logged()
    assert "Traceback" not in server.logged()


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    from _servers import drop_server_database, make_server_database, require_server

    require_server("postgresql")
    url = make_server_database("postgresql")
    try:
        yield url
    finally:
        drop_server_database("postgresql", url)


@pytest.mark.server
def test_the_database_lost_while_serving_keeps_the_service_answering(
    postgresql_url: str, tmp_path: Path
) -> None:
    """The database is dropped under the service (its connections terminated); the models
    loaded keep answering, the log says so once, and the password is never shown."""
    url = make_url(postgresql_url).set(password=PASSWORD).render_as_string(hide_password=False)
    promote(url, "add", exact_add(), 1.0)
    server = start_server(url, tmp_path, "--poll", "0.5")
    try:
        before = _answer(server)
        assert before.json() == {"predictions": [5.0], "model_version": 1}
        database = make_url(postgresql_url).database
        admin = sqlalchemy.create_engine(admin_url("postgresql"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        admin.dispose()
        _wait_for_log(server, "cannot read the registry")
        for _ in range(20):
            assert _answer(server).json() == {"predictions": [5.0], "model_version": 1}
        responses = [httpx.get(f"{server.base}{p}").text for p in ("/healthz", "/v1/models/add")]
    finally:
        assert server.stop() == 0, server.logged()
    logged = server.logged()
    assert "still serving: add v1" in logged and logged.count("cannot read the registry") == 1
    assert "***" in logged  # the start-up line shows the URL, masked
    for text in (logged, before.text, *responses):
        assert PASSWORD not in text
    assert "Traceback" not in logged


def _sweep(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*sweep_command(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_serve_refuses_a_taken_port_an_unknown_operation_and_a_bad_host(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    ModelRegistry(url).close()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _sweep("serve", "--storage", url, "--port", str(port), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"sweep: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    for args, message in (
        (["cube"], "unknown operation 'cube'"),
        (["../x"], "unknown operation '../x'"),
        (["--host", "no-such-host.invalid", "--port", str(free_port())], "cannot listen on"),
        (["--port", "70000"], "is not a port number"),
    ):
        done = _sweep("serve", "--storage", url, *args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len([line for line in done.stderr.splitlines() if "error" in line]) == 1


_BLOCKED = """
import sys
sys.modules["tf2onnx"] = None  # as if the onnx extra were not installed
from sweep.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_pull_onnx_without_the_extra_names_it_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    promote(url, "add", exact_add(), 1.0)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED, "pull", "add", "--format", "onnx", "--storage", url],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        'sweep: error: --format onnx needs tf2onnx; install it with: '
        'pip install "neural-arithmetic-sweep[onnx]"'
    )
    assert time.monotonic() - started < 30  # said before TensorFlow starts
    assert not (tmp_path / "add.onnx").exists()
