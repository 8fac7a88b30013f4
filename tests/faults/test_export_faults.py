"""Export faults: the artifact folder cannot be written, or its disk fills up mid-export.

The model is promoted into the registry (the database) first; the note and the artifacts for
optuna-dashboard come after and are best effort. A failure there is one warning line per
promotion; the sweep goes on, the trials and the registry stay whole, and the dashboard never
lists an artifact whose file is missing or cut short.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pytest
from _fault_helpers import (
    CAMPAIGN,
    OPERATIONS,
    assert_budget_exact,
    assert_registry_whole,
    campaign_file,
    run_sweep,
    studies,
    sweep_env,
)

import sweep
from storage import ModelRegistry

# A warning line, after the timestamp that lines carry off a terminal.
_WARNING = re.compile(r"^(?:\S+Z )?warning:")

pytestmark = pytest.mark.slow

_PNG_END = b"IEND\xaeB`\x82"


def _get(app: Any, path: str, query: str = "") -> tuple[str, bytes]:
    """One GET through the dashboard's WSGI app, no socket needed."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD="GET")
    status: list[str] = []

    def start_response(code: str, headers: Any, exc_info: Any = None) -> None:
        status.append(code)

    body = b"".join(app(environ, start_response))
    return status[0], body


def _dashboard_serves_every_listed_artifact(url: str, folder: Path) -> int:
    """Every study page of optuna-dashboard answers, and every artifact it lists downloads
    whole (a complete zip or PNG). Returns how many artifacts are listed."""
    storage = optuna.storages.RDBStorage(url)
    store = optuna.artifacts.FileSystemArtifactStore(folder) if folder.is_dir() else None
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    listed = 0
    try:
        status, body = _get(app, "/api/studies")
        assert status.startswith("200"), (status, body[:300])
        for summary in json.loads(body)["study_summaries"]:
            study_id = summary["study_id"]
            status, body = _get(app, f"/api/studies/{study_id}", "after=0")
            assert status.startswith("200"), (status, body[:300])
            detail = json.loads(body)
            owners = [(f"/artifacts/{study_id}", detail.get("artifacts", []))]
            owners += [
                (f"/artifacts/{study_id}/{trial['trial_id']}", trial.get("artifacts", []))
                for trial in detail["trials"]
            ]
            for prefix, artifacts in owners:
                for artifact in artifacts:
                    listed += 1
                    status, data = _get(app, f"{prefix}/{artifact['artifact_id']}")
                    assert status.startswith("200"), (artifact, status)
                    if artifact["filename"].endswith(".keras"):
                        with zipfile.ZipFile(io.BytesIO(data)) as archive:
                            assert archive.testzip() is None, artifact
                    else:
                        assert data.endswith(_PNG_END), artifact
    finally:
        storage.engine.dispose()
    return listed


def _assert_sweep_whole(url: str, budget: int) -> None:
    assert_budget_exact(url, budget)
    assert assert_registry_whole(url) >= len(OPERATIONS)
    for op in OPERATIONS:
        model = sweep.load_best_model(op, storage=url, campaign=CAMPAIGN)  # checksum, safe mode
        assert model.count_params() > 0
    with ModelRegistry(url) as registry:
        for entry in registry.best_all(CAMPAIGN):
            trial = studies(url)[entry.operation].trials[entry.trial_number]
            assert trial.user_attrs["registry_version"] == entry.version


def test_an_unwritable_artifact_folder_warns_and_the_sweep_completes(tmp_path: Path) -> None:
    """The artifact folder sits under a regular file: it can never be created (even by root)."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    (tmp_path / "afile").write_text("a file, not a folder")
    artifacts = tmp_path / "afile" / "artifacts"
    config = campaign_file(tmp_path, trials=2, epochs=2)
    env = sweep_env(url, tmp_path, SWEEP_ARTIFACTS=str(artifacts))
    result = run_sweep(["run", "--config", str(config)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Best model per operation" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if _WARNING.match(line)]
    assert warnings, result.stderr
    for line in warnings:
        assert f"artifact folder {str(artifacts)!r} is not writable" in line, line

    _assert_sweep_whole(url, 2)
    for study in studies(url).values():
        # The note is still written, and does not promise artifacts that do not exist.
        note = optuna_dashboard.get_note(study)
        assert "Best model" in note and "Artifacts" not in note
        assert not _artifact_ids(study)
    assert _dashboard_serves_every_listed_artifact(url, artifacts) == 0


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs with a few KiB left: room for the folder, not for a model and a plot."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (56 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_export_leaves_no_half_written_artifact(
    tmp_path: Path, full_disk: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    artifacts = full_disk / "artifacts"
    config = campaign_file(tmp_path, trials=2, epochs=2)
    env = sweep_env(url, tmp_path, SWEEP_ARTIFACTS=str(artifacts))
    result = run_sweep(["run", "--config", str(config)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if _WARNING.match(line)]
    assert warnings, result.stderr
    assert all("No space left on device" in line for line in warnings), warnings

    _assert_sweep_whole(url, 2)
    _dashboard_serves_every_listed_artifact(url, artifacts)
    # No stray partial files either: whatever is in the folder is a listed, whole artifact.
    listed = {key for study in studies(url).values() for key in _artifact_ids(study)}
    for study in studies(url).values():
        if not _artifact_ids(study):  # The note does not promise artifacts that are not there.
            assert "Artifacts" not in optuna_dashboard.get_note(study)
    stored = {p.name for p in artifacts.iterdir() if _is_uuid(p.name)}
    assert stored == listed


def _artifact_ids(study: optuna.Study) -> set[str]:
    """The artifacts recorded on a study and its trials (Optuna's ``artifacts:ID`` attrs)."""
    attrs = [
        study._storage.get_study_system_attrs(study._study_id),
        *(t.system_attrs for t in study.trials),
    ]
    prefix = "artifacts:"
    return {key.removeprefix(prefix) for a in attrs for key in a if key.startswith(prefix)}


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True
