"""Safe loading: nothing stored in the registry can make `pull`, `predict` or
`sweep.load_best_model` run code, and every pull checks the model's sha256.

The hostile entries are crafted straight into the registry, as someone with write access to the
database could: a Lambda layer (marshalled Python bytecode), a custom layer class nobody
registered, and an archive whose config names an arbitrary Python callable (`os.system`).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import keras
import pytest
import sqlalchemy

import sweep
from storage import ChecksumMismatch, ModelCandidate, ModelRegistry
from sweep.cli import main
from sweep.errors import ModelLoadError, SweepError
from sweep.nets.saving import serialize_model


class _Unregistered(keras.layers.Layer):  # type: ignore[misc]
    """A custom layer that was never registered with Keras: its code is not in the archive."""

    def call(self, inputs: Any) -> Any:
        return inputs[:, :1] * inputs[:, 1:]


def _lambda_model() -> bytes:
    inputs = keras.Input(shape=(2,))
    return serialize_model(
        keras.Model(inputs, keras.layers.Lambda(lambda t: t[:, :1] * t[:, 1:])(inputs))
    )


def _unregistered_model() -> bytes:
    inputs = keras.Input(shape=(2,))
    return serialize_model(keras.Model(inputs, _Unregistered()(inputs)))


def _plain_model() -> bytes:
    inputs = keras.Input(shape=(2,))
    return serialize_model(keras.Model(inputs, keras.layers.Dense(1)(inputs)))


def _callable_in_config(marker: Path) -> bytes:
    """A valid archive whose layer is `os.system` with a command that would create `marker`."""
    source = zipfile.ZipFile(io.BytesIO(_plain_model()))
    config = json.loads(source.read("config.json"))
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer.update(
                module="os", class_name="system", registered_name=None,
                config={"command": f"touch {marker}"},
            )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                data = json.dumps(config).encode()
            target.writestr(item, data)
    return out.getvalue()


def _store(url: str, operation: str, data: bytes, objective_value: float = 0.0) -> None:
    with ModelRegistry(url) as registry:
        entry = registry.promote_if_better(
            ModelCandidate(
                campaign="arith", operation=operation, study_name=f"arith.{operation}",
                trial_number=0, objective_value=objective_value, metrics={}, params={},
                model_bytes=data, keras_version=keras.__version__, tensorflow_version="2",
            )
        )
    assert entry is not None


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_hostile_registry_entries_are_refused_by_pull_predict_and_load(
    storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "pwned"
    crafted = {
        # Refused before Keras reads them: only the classes a sweep model is built from load.
        "multiply": (_lambda_model(), "is a 'Lambda', not one of the layers a sweep model"),
        "add": (_unregistered_model(), "is a '_Unregistered', not one of the layers"),
        "subtract": (_callable_in_config(marker), "is a 'system', not one of the layers"),
        "square": (b"MZ\x90\x00 anything but a zip", "is not a readable .keras archive"),
    }
    for operation, (data, _) in crafted.items():
        _store(storage_url, operation, data)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))

    for operation, (_, named) in crafted.items():
        target = tmp_path / f"{operation}.keras"
        code, out, err = _cli(["pull", operation, "-o", str(target), "--storage", storage_url],
                              capsys)
        line = _one_line(err)
        assert code == 2 and out == ""
        assert line.startswith(f"sweep: error: cannot load {operation} version 1") or (
            line.startswith(f"sweep: error: {operation} version 1")
        ), line
        assert named in line, line
        argv = ["predict", operation, "2", *(["3"] if operation != "square" else [])]
        code, out, err = _cli([*argv, "--storage", storage_url], capsys)
        assert code == 2 and out == ""
        assert named in _one_line(err)
        with pytest.raises(ModelLoadError, match=re.escape(named)) as refused:
            sweep.load_best_model(operation, storage=storage_url)
        assert "\n" not in str(refused.value)
        assert isinstance(refused.value, SweepError)

    assert sorted(os.listdir(tmp_path)) == before  # no model file, no temp file
    assert not marker.exists()


@pytest.mark.slow
def test_a_fresh_process_refuses_an_unregistered_layer(tmp_path: Path) -> None:
    """`python -m sweep pull` in its own process: the class exists nowhere there."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    _store(url, "add", _unregistered_model())
    env = {**os.environ, "SWEEP_STORAGE": url}
    result = subprocess.run(
        [sys.executable, "-m", "sweep", "pull", "add"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert line.startswith("sweep: error: cannot load add version 1 in safe mode"), line
    assert not (tmp_path / "add.keras").exists()


def _tamper(url: str, version: int, **values: object) -> None:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE sweep_model_versions SET "
                + ", ".join(f"{key} = :{key}" for key in values)
                + " WHERE operation = 'add' AND version = :version"
            ),
            {**values, "version": version},
        )
    engine.dispose()


def _flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def test_every_pull_verifies_the_checksum(
    storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bit flipped in a stored model, or a rewritten checksum, is refused on the next pull
    (even one that already succeeded), and nothing is written, not even over with --force."""
    good = _plain_model()
    _store(storage_url, "add", good, objective_value=2.0)
    _store(storage_url, "add", _plain_model(), objective_value=1.0)  # version 2, the best
    path = tmp_path / "add.keras"
    code, _, err = _cli(["pull", "add", "-o", str(path), "--storage", storage_url], capsys)
    assert code == 0, err
    pulled = path.read_bytes()

    with ModelRegistry(storage_url) as registry:
        _, stored = registry.fetch("arith", "add")
    _tamper(storage_url, 2, model_bytes=_flip_one_byte(stored))  # same length, one bit off
    for argv in (
        ["pull", "add", "-o", str(path), "--force"],
        ["pull", "add", "-o", str(tmp_path / "other.keras")],
        ["predict", "add", "1", "2"],
    ):
        code, out, err = _cli([*argv, "--storage", storage_url], capsys)
        line = _one_line(err)
        assert code == 2 and out == ""
        assert "version 2 is corrupt" in line and "sha256" in line, line
    with pytest.raises(ChecksumMismatch):
        sweep.load_best_model("add", storage=storage_url)
    assert path.read_bytes() == pulled
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".db") == ["add.keras"]

    # Version 1 is intact and still pulls; a forged checksum on it is caught as well.
    one = tmp_path / "one.keras"
    code, _, err = _cli(
        ["pull", "add", "--version", "1", "-o", str(one), "--storage", storage_url], capsys
    )
    assert code == 0, err
    assert one.read_bytes() == good
    _tamper(storage_url, 1, sha256="0" * 64)
    code, _, err = _cli(
        ["pull", "add", "--version", "1", "-o", str(tmp_path / "again.keras"),
         "--storage", storage_url],
        capsys,
    )
    assert code == 2 and "version 1 is corrupt" in _one_line(err)
    assert not (tmp_path / "again.keras").exists()
