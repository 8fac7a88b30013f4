"""Registry round trip on every backend: sweep -> promote -> pull -> fresh process -> predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import sqlalchemy

import sweep
from storage import Database, ModelCandidate, ModelRegistry
from sweep.cli import main
from sweep.nets.saving import serialize_model
from sweep.problem.data import DataSpec, make_dataset
from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.search.config import CampaignConfig
from sweep.search.space import SearchSpace

CONFIG = CampaignConfig(
    operations=("add", "multiply"),
    trials=2,
    data=DataSpec(examples=600, test_examples=200, extrapolation_examples=200),
    space=SearchSpace.from_dict({"epochs": 2, "layers": {"low": 0, "high": 1}}),
)


@pytest.fixture
def swept(storage_url: str) -> str:
    """A real (tiny) sweep on the backend under test; returns its URL."""
    sweep.run_campaign(CONFIG, storage_url)
    return storage_url


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_round_trip_pull_load_in_fresh_process_predict(
    swept: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "multiply.keras"
    code, out, err = _cli(["pull", "multiply", "-o", str(path), "--storage", swept], capsys)
    assert code == 0, err
    assert "multiply version" in out

    with ModelRegistry(swept) as registry:
        entry = registry.best("arith", "multiply")
    assert entry is not None
    dataset = make_dataset(BUILTIN_OPERATIONS["multiply"], CONFIG.data)
    inputs = tmp_path / "x.json"
    inputs.write_text(json.dumps(dataset.x_test.tolist()))
    script = (
        "import json, sys, numpy as np, keras, sweep.nets.layers\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        f"x = np.array(json.load(open({str(inputs)!r})), dtype='float32')\n"
        "print(json.dumps(m.predict(x, verbose=0).reshape(-1).tolist()))\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    predictions = np.array(json.loads(fresh.stdout.strip().splitlines()[-1]))
    mae = float(np.mean(np.abs(predictions - dataset.y_test)))
    assert mae == pytest.approx(entry.metrics["test_mae"], rel=1e-4, abs=1e-4)
    hit_rate = float(np.mean(np.rint(predictions) == dataset.y_test))
    assert hit_rate == pytest.approx(entry.metrics["test_hit_rate"], abs=1e-9)

    # The Python API agrees with the file.
    model = sweep.load_best_model("multiply", storage=swept)
    assert isinstance(model, keras.Model)
    result = sweep.predict("multiply", 12, 34, storage=swept)
    again = model.predict(np.array([[12, 34]], dtype="float32"), verbose=0)
    assert result.output == pytest.approx(float(again[0, 0]), rel=1e-6)
    assert result.exact == 408.0

    code, out, _ = _cli(["predict", "add", "2", "3", "--storage", swept], capsys)
    assert code == 0 and out.startswith("add(2, 3) = ")

    code, out, _ = _cli(["models", "--storage", swept], capsys)
    assert code == 0 and "multiply" in out and "add" in out


def test_pull_refuses_to_overwrite_without_force(
    swept: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "add.keras"
    path.write_bytes(b"keep me")
    code, _, err = _cli(["pull", "add", "-o", str(path), "--storage", swept], capsys)
    assert code == 2 and "--force" in err
    assert path.read_bytes() == b"keep me"
    code, _, err = _cli(["pull", "add", "-o", str(path), "--force", "--storage", swept], capsys)
    assert code == 0, err
    assert path.read_bytes()[:2] == b"PK"  # a .keras file is a zip archive

    link = tmp_path / "link.keras"
    link.symlink_to(tmp_path / "elsewhere.keras")
    code, _, err = _cli(["pull", "add", "-o", str(link), "--force", "--storage", swept], capsys)
    assert code == 2 and "symbolic link" in err
    assert not (tmp_path / "elsewhere.keras").exists()


def _corrupt(url: str, **values: object) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE sweep_model_versions SET "
                + ", ".join(f"{k} = :{k}" for k in values)
                + " WHERE operation = 'add'"
            ),
            values,
        )
    engine.dispose()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_bytes": b"PK\x03\x04 not a model"}, "corrupt"),
        ({"keras_version": "2.15.0"}, "saved by Keras 2.15.0"),
    ],
)
def test_damaged_entries_are_refused_with_one_line(
    swept: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    change: dict[str, object], message: str,
) -> None:
    _corrupt(swept, **change)
    for argv in (["pull", "add", "-o", str(tmp_path / "a.keras")], ["predict", "add", "1", "2"]):
        code, _, err = _cli([*argv, "--storage", swept], capsys)
        assert code == 2
        assert message in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.keras").exists()


def test_a_lambda_model_in_the_registry_is_refused(
    storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = keras.Input(shape=(2,))
    crafted = keras.Model(inputs, keras.layers.Lambda(lambda t: t[:, :1] * t[:, 1:])(inputs))
    with ModelRegistry(storage_url) as registry:
        registry.promote_if_better(
            ModelCandidate(
                campaign="arith", operation="multiply", study_name="arith.multiply",
                trial_number=0, objective_value=0.0, metrics={}, params={},
                model_bytes=serialize_model(crafted), keras_version=keras.__version__,
                tensorflow_version="2",
            )
        )
    out_path = tmp_path / "m.keras"
    code, _, err = _cli(
        ["pull", "multiply", "-o", str(out_path), "--storage", storage_url], capsys
    )
    assert code == 2 and "safe mode" in err and "Lambda" in err
    assert not out_path.exists()


def test_unknown_operation_and_no_model_yet(
    storage_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(["pull", "add", "--storage", storage_url], capsys)
    assert code == 2 and "run `sweep run` first" in err  # a reader creates nothing
    with Database(storage_url) as database:
        database.registry  # noqa: B018 - a sweep database, with nothing promoted yet
    code, _, err = _cli(["pull", "mul", "--storage", storage_url], capsys)
    assert code == 2 and "unknown operation 'mul'" in err
    code, _, err = _cli(["predict", "divide", "4", "2", "--storage", storage_url], capsys)
    assert code == 2 and "divide" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(["predict", "square", "4", "2", "--storage", storage_url], capsys)
    assert code == 2 and "takes one input" in err
