"""Study notes, artifacts and the real optuna-dashboard, through its API and headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from _finished_sweep import CAMPAIGN, FinishedSweep, finished_sweep
from optuna_dashboard import get_note

from storage import Database, ModelEntry, ModelRegistry
from sweep.cli import main
from sweep.errors import PublishError
from sweep.nets.saving import load_model_bytes, load_model_file
from sweep.nets.training import KerasPredictor
from sweep.problem.data import Dataset, make_dataset
from sweep.publishing.notes import publish_best

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    return finished_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def best_add(sweep_run: FinishedSweep) -> tuple[ModelEntry, Any, Dataset]:
    """The registry's best add model, loaded, with its dataset."""
    from sweep.search.config import load_campaign_config

    with Database(sweep_run.url) as database:
        config = load_campaign_config(database.campaigns, CAMPAIGN)
        assert config is not None
        entry, data = database.registry.fetch(CAMPAIGN, "add")
    operation = next(op for op in config.resolved_operations() if op.name == "add")
    return entry, KerasPredictor(load_model_bytes(data)), make_dataset(operation, config.data)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "headless Chromium is not installed (apt-get install chromium)"
        if "CI" in os.environ:
            pytest.fail(f"{message}; CI must run this test", pytrace=False)
        pytest.skip(message)
    return path


def _run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--virtual-time-budget=8000", *args],
            capture_output=True, text=True, timeout=90,
        )


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- notes and artifacts (no server) ----------------------------------------------------------


def test_each_study_has_a_note_with_the_best_model(sweep_run: FinishedSweep) -> None:
    with ModelRegistry(sweep_run.url) as registry:
        entries = {e.operation: e for e in registry.best_all(CAMPAIGN)}
    assert set(entries) == {"add", "multiply"}
    for op, entry in entries.items():
        study = optuna.load_study(study_name=f"{CAMPAIGN}.{op}", storage=sweep_run.url)
        note = get_note(study)
        assert f"trial {entry.trial_number}, registry version {entry.version}" in note
        assert entry.sha256[:12] in note
        assert str(entry.params["architecture"]) in note
        assert f"`{entry.params['input_normalization']}` / " in note
        assert "extrapolation band, a, b in [500, 1000)" in note
        assert "unseen in-range pairs, a, b in [0, 500)" in note


def test_finished_best_trial_gets_its_artifacts_on_the_study(sweep_run: FinishedSweep) -> None:
    # The sweep had finished when the fixture published: Optuna attaches artifacts to running
    # trials only, so they are on the study, and they are real files.
    store = optuna.artifacts.FileSystemArtifactStore(sweep_run.artifacts)
    for name in sweep_run.study_names:
        study = optuna.load_study(study_name=name, storage=sweep_run.url)
        metas = optuna.artifacts.get_all_artifact_meta(study)
        by_suffix = {Path(m.filename).suffix: m for m in metas}
        assert set(by_suffix) >= {".keras", ".png"}, metas
        assert by_suffix[".png"].mimetype == "image/png"
        target = sweep_run.folder / f"{name}-download"
        target.mkdir(exist_ok=True)
        png = target / "plot.png"
        optuna.artifacts.download_artifact(
            artifact_store=store, artifact_id=by_suffix[".png"].artifact_id, file_path=str(png)
        )
        width, height = _png_size(png.read_bytes())
        assert width > 400 and height > 200
        model_path = target / "model.keras"
        optuna.artifacts.download_artifact(
            artifact_store=store, artifact_id=by_suffix[".keras"].artifact_id,
            file_path=str(model_path),
        )
        assert load_model_file(model_path).count_params() > 0  # loads in safe mode


def test_a_running_trial_gets_the_artifacts_itself(
    tmp_path: Path, best_add: tuple[ModelEntry, Any, Dataset]
) -> None:
    entry, model, dataset = best_add
    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = optuna.create_study(study_name="live.add", storage=url)
    trial = study.ask()
    publish_best(study, trial.number, entry, model, dataset, tmp_path / "new" / "artifacts")
    frozen = study.trials[trial.number]
    metas = optuna.artifacts.get_all_artifact_meta(frozen, storage=study._storage)
    assert sorted(Path(m.filename).suffix for m in metas) == [".keras", ".png"]
    assert not optuna.artifacts.get_all_artifact_meta(study)
    assert f"on trial {trial.number}" in get_note(study)
    study.tell(trial, 1.0)


def test_an_unwritable_artifact_folder_is_one_line_and_the_note_is_still_written(
    tmp_path: Path, best_add: tuple[ModelEntry, Any, Dataset]
) -> None:
    entry, model, dataset = best_add
    url = f"sqlite:///{tmp_path / 'ro.db'}"
    study = optuna.create_study(study_name="ro.add", storage=url)
    trial = study.ask()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PublishError) as caught:
        publish_best(study, trial.number, entry, model, dataset, blocker / "artifacts")
    message = str(caught.value)
    assert "not writable" in message and len(message.splitlines()) == 1
    assert f"registry version {entry.version}" in get_note(study)
    # Nothing half-recorded: the trial has no artifact pointing at a missing file.
    assert not optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)


# --- the dashboard process ---------------------------------------------------------------------


@pytest.fixture
def dashboard(sweep_run: FinishedSweep) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`sweep dashboard` on a free port; yields its URL once the API answers."""
    env = {**os.environ}
    env.pop("SWEEP_STORAGE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "sweep", "dashboard", "--storage", sweep_run.url, "--port", "0",
         "--artifacts", str(sweep_run.artifacts)],
        cwd=sweep_run.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        found = re.search(r"http://127\.0\.0\.1:\d+/dashboard", "".join(lines))
        if found is None:
            process.kill()
            pytest.fail(f"no URL printed: {lines!r}\n{process.communicate()[1]}")
        url = found.group(0)
        base = url.removesuffix("/dashboard")
        deadline = time.monotonic() + 60
        while True:
            try:
                _get_json(f"{base}/api/studies")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("the dashboard never answered /api/studies")
                time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_dashboard_lists_every_study_renders_and_stops_cleanly(
    sweep_run: FinishedSweep,
    dashboard: tuple[str, subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    url, process = dashboard
    base = url.removesuffix("/dashboard")
    expected = {s.study_name for s in optuna.get_all_study_summaries(sweep_run.url)}
    assert expected >= set(sweep_run.study_names)
    summaries = _get_json(f"{base}/api/studies")["study_summaries"]
    assert {s["study_name"] for s in summaries} == expected

    # The note and the artifacts, as the dashboard serves them.
    multiply = next(s for s in summaries if s["study_name"] == f"{CAMPAIGN}.multiply")
    detail = _get_json(f"{base}/api/studies/{multiply['study_id']}")
    assert "Best model: trial" in detail["note"]["body"]
    png = next(a for a in detail["artifacts"] if a["filename"].endswith(".png"))
    with urllib.request.urlopen(
        f"{base}/artifacts/{multiply['study_id']}/{png['artifact_id']}", timeout=10
    ) as response:
        assert response.read(8) == PNG_MAGIC

    # The page as a browser renders it (the study list is built by JavaScript).
    rendered = _run_chromium("--dump-dom", url)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    for name in expected:
        # The DOM holds text escaped (test_report adds a study named "edge.<img ...>").
        assert html.escape(name, quote=False) in rendered.stdout, name
    note_page = _run_chromium("--dump-dom", f"{url}/studies/{multiply['study_id']}/note")
    assert "Best model: trial" in note_page.stdout

    screenshot = tmp_path / "dashboard.png"
    shot = _run_chromium(f"--screenshot={screenshot}", "--window-size=1200,800", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert _png_size(data) == (1200, 800)
    assert len(data) > 10_000  # a rendered page, not a blank one

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.strip() == "dashboard stopped"


def test_a_busy_port_is_one_line_and_exit_2(
    sweep_run: FinishedSweep, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["dashboard", "--storage", sweep_run.url, "--port", str(port)])
    _, err = capsys.readouterr()
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "sqlite:///missing.db"], "no database at"),
        (["--port", "70000"], "not a port number"),
        (["--artifacts", "no-such-folder"], "artifact folder 'no-such-folder' does not exist"),
    ],
)
def test_dashboard_refuses_bad_settings_in_one_line(
    args: list[str], message: str, sweep_run: FinishedSweep, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_STORAGE", sweep_run.url)
    try:
        code = main(["dashboard", "--port", "0", *args])
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()
