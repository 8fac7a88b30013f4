"""A real sweep over four named real inputs (n*R*T/V) and a four-column table, pulled in every
format and answered by each format's own runtime: Keras in safe mode, plain TensorFlow
(``tf.saved_model.load``) and ONNX Runtime, on the same rows, as alike as float64 allows. The
report and the study notes show every input with its range and band.

One small sweep (2 trials for each of four operations: an MLP, the exact log-linear model, a
power model and a table's MLP) runs once for the module, in a subprocess, about 10 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnxruntime
import optuna
import pytest
import tensorflow as tf
from _finished_sweep import sweep_cli
from optuna_dashboard import get_note

import sweep.nets.layers  # noqa: F401  (registers the layers a pulled model names)
from storage import Database
from sweep.cli import main
from sweep.nets.exporting import rounding_bound
from sweep.nets.portable import TOLERANCE, check_answers, compare_answers
from sweep.nets.saving import load_model_bytes
from sweep.nets.training import predict
from sweep.problem.data import make_dataset
from sweep.problem.operations import Operation
from sweep.problem.tables import Table
from sweep.publishing.pulling import campaign_table, probe_inputs
from sweep.search.config import CampaignConfig, load_campaign_config

pytestmark = pytest.mark.slow

CAMPAIGN = "gas"
GAS_INPUTS = ("n", "R", "T", "V")
TABLE_INPUTS = ("n", "T", "V", "k")
OPERATIONS = ("gas", "gaslin", "gaspow", "gastab")
RANGES = """
n = { low = 1, high = 5, kind = "real" }
R = { low = 8, high = 9, kind = "real" }
T = { low = 250, high = 350, kind = "real" }
V = { low = 1, high = 10, kind = "real" }
"""
CONFIG = f"""
[campaign]
name = "{CAMPAIGN}"
operations = ["gas", "gaslin", "gaspow", "gastab"]
stop_when_exact = false
[expressions]
gas = "n*R*T/V"
gaslin = "n*R*T/V"
gaspow = "n*R*T/V"
[inputs.gas]
{RANGES}
[inputs.gaslin]
{RANGES}
[inputs.gaspow]
{RANGES}
[datasets]
gastab = {{ file = "gas.csv", target = "P" }}
[data]
examples = 400
test_examples = 100
extrapolation_examples = 100
[space]
family = "mlp"
epochs = 2
layers = 1
width = 8
activation = "tanh"
input_normalization = "standard"
target_normalization = "standard"
[overrides.gaslin]
layers = 0
activation = "linear"
input_normalization = "log_abs"
target_normalization = "log_abs"
[overrides.gaspow]
family = "power"
degree = 2
negative_powers = true
half_powers = false
"""


@dataclass(frozen=True)
class Swept:
    folder: Path
    url: str
    config: CampaignConfig
    operations: dict[str, Operation]
    tables: dict[str, Table | None]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    folder = tmp_path_factory.mktemp("n-inputs")
    rng = np.random.default_rng(1)
    n, t, v = rng.uniform(1, 5, 400), rng.uniform(250, 350, 400), rng.uniform(1, 10, 400)
    k = rng.integers(1, 4, 400).astype(np.float64)
    rows = np.column_stack([n, t, v, k, n * 8.314 * t / v * k])
    (folder / "gas.csv").write_text(
        ",".join((*TABLE_INPUTS, "P")) + "\n"
        + "".join(",".join(repr(float(c)) for c in row) + "\n" for row in rows)
    )
    (folder / "multi.toml").write_text(CONFIG)
    url = f"sqlite:///{folder / 'sweeps.db'}"
    done = sweep_cli("run", "--config", "multi.toml", "--storage", url, "--trials", "2",
                     cwd=folder)
    assert done.returncode == 0, done.stderr
    with Database(url) as database:
        config = load_campaign_config(database.campaigns, CAMPAIGN)
        assert config is not None
        operations = {op.name: op for op in config.resolved_operations()}
        tables = {name: campaign_table(database, config, op) for name, op in operations.items()}
    return Swept(folder, url, config, operations, tables)


def _pull(swept: Swept, op: str, format: str, capsys: pytest.CaptureFixture[str]) -> Path:
    name = {"keras": f"{op}.keras", "onnx": f"{op}.onnx", "savedmodel": op}[format]
    path = swept.folder / "pulled" / name
    path.parent.mkdir(exist_ok=True)
    code = main(["pull", op, "--campaign", CAMPAIGN, "--format", format, "-o", str(path),
                 "--force", "--storage", swept.url])
    out, err = capsys.readouterr()
    assert code == 0, err
    if format != "keras":
        assert "answers as the registry model" in out, out
    return path


def _onnx_answers(path: Path, x: np.ndarray, inputs: tuple[str, ...]) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    (result,) = session.get_outputs()
    assert (given.name, given.type, given.shape[1]) == ("operands", "tensor(double)", 4)
    assert (result.name, result.type) == ("result", "tensor(double)")
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["inputs"] == ",".join(inputs)
    return np.asarray(session.run(None, {"operands": x})[0], dtype=np.float64).reshape(-1)


def _savedmodel_answers(path: Path, x: np.ndarray) -> np.ndarray:
    (version,) = [p for p in path.iterdir() if p.name.isdigit()]  # TF Serving's layout
    function = tf.saved_model.load(str(version)).signatures["serving_default"]
    spec = function.structured_input_signature[1]["operands"]
    assert spec.dtype == tf.float64 and spec.shape.as_list() == [None, 4]
    out = function(operands=tf.constant(x))["result"]
    assert out.dtype == tf.float64
    return np.asarray(out.numpy(), dtype=np.float64).reshape(-1)


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_format_answers_as_the_keras_model(
    swept: Swept, op: str, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {f: _pull(swept, op, f, capsys) for f in ("keras", "savedmodel", "onnx")}
    model = keras.saving.load_model(paths["keras"], safe_mode=True)
    assert tuple(model.inputs[0].shape) == (None, 4)
    operation = swept.operations[op]
    x = probe_inputs(operation, swept.config.data, swept.tables[op])
    assert x.dtype == np.float64 and x.shape[1] == 4 and len(x) > 100
    reference = predict(model, x)
    assert np.isfinite(reference).all()
    saved = _savedmodel_answers(paths["savedmodel"], x)
    assert compare_answers(reference, saved, integer_valued=False).bitwise
    onnx = _onnx_answers(paths["onnx"], x, operation.inputs)
    comparison = check_answers(
        reference, onnx, integer_valued=operation.integer_valued, label=op,
        rounding=rounding_bound(model, x, reference),
    )
    if op != "gaspow":  # MLPs and the log-linear model: within the plain tolerance
        assert comparison.max_relative_error <= TOLERANCE, comparison.describe()


def test_the_columns_are_the_inputs_in_order(
    swept: Swept, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exact log-linear model computes n*R*T/V of the columns as given, in every format;
    the same numbers in another order are another question."""
    operation = swept.operations["gaslin"]
    assert operation.inputs == GAS_INPUTS and not operation.integer_valued
    x = make_dataset(operation, swept.config.data).x_test
    truth = x[:, 0] * x[:, 1] * x[:, 2] / x[:, 3]
    paths = {f: _pull(swept, "gaslin", f, capsys) for f in ("keras", "savedmodel", "onnx")}
    answers = {
        "keras": predict(keras.saving.load_model(paths["keras"], safe_mode=True), x),
        "savedmodel": _savedmodel_answers(paths["savedmodel"], x),
        "onnx": _onnx_answers(paths["onnx"], x, GAS_INPUTS),
    }
    for where, y in answers.items():
        assert np.allclose(y, truth, rtol=1e-9, atol=0), where
    swapped = x[:, [0, 1, 3, 2]]  # V where T belongs
    assert not np.allclose(_onnx_answers(paths["onnx"], swapped, GAS_INPUTS), truth, rtol=0.1)


def test_the_report_and_the_notes_show_every_input_with_its_range_and_band(
    swept: Swept, capsys: pytest.CaptureFixture[str]
) -> None:
    output = swept.folder / "report.html"
    code = main(["report", "--campaign", CAMPAIGN, "-o", str(output), "--force",
                 "--storage", swept.url])
    _, err = capsys.readouterr()
    assert code == 0, err
    text = output.read_text(encoding="utf-8")
    for op in OPERATIONS:
        section = re.search(rf'<section id="op-{op}">(.*?)</section>', text, re.S)
        assert section is not None, op
        body = section.group(1)
        assert "could not be loaded" not in body and "cannot be rebuilt" not in body, op
        assert 'alt="predicted vs true on the extrapolation band"' in body, op
        cells = re.findall(r"<tr><td>(\w+)</td><td>(integer|real)</td>", body)
        inputs = TABLE_INPUTS if op == "gastab" else GAS_INPUTS
        assert [name for name, _ in cells] == list(inputs), op
    gas = re.search(r'<section id="op-gas">(.*?)</section>', text, re.S)
    assert gas is not None
    assert "<td>T</td><td>real</td><td>[250, 350)</td><td>[350, 450)</td>" in gas.group(1)
    table = re.search(r'<section id="op-gastab">(.*?)</section>', text, re.S)
    assert table is not None and "every row of its table" in table.group(1)
    assert "<td>k</td><td>integer</td><td>[1, 3]</td>" in table.group(1)

    for op in OPERATIONS:  # written by the sweep at each promotion
        study = optuna.load_study(study_name=f"{CAMPAIGN}.{op}", storage=swept.url)
        note = get_note(study)
        assert "### Inputs" in note, op
        inputs = TABLE_INPUTS if op == "gastab" else GAS_INPUTS
        assert f"in this order: `{', '.join(inputs)}`" in note, op
    note = get_note(optuna.load_study(study_name=f"{CAMPAIGN}.gas", storage=swept.url))
    assert "| `V` | real | [1, 10) | [10, 19) |" in note


def test_the_servers_converter_checks_each_model_on_its_own_rows(swept: Swept) -> None:
    """`sweep serve`'s ONNX conversion: the power model over four inputs passes (its sum's own
    rounding allowed), and a table's model converts with its rows or, without them, on the
    generic probe."""
    from sweep.publishing.model_backends import ModelToConvert, OnnxConverter

    with Database(swept.url) as database:
        fetched = {op: database.registry.fetch(CAMPAIGN, op) for op in ("gaspow", "gastab")}
    table = swept.tables["gastab"]
    assert table is not None
    models = [
        ModelToConvert(*fetched["gaspow"], swept.operations["gaspow"]),
        ModelToConvert(*fetched["gastab"], swept.operations["gastab"], table),
        ModelToConvert(*fetched["gastab"], swept.operations["gastab"]),
    ]
    predictors = OnnxConverter().convert(models, swept.config.data)
    for model, predictor in zip(models, predictors, strict=True):
        assert not isinstance(predictor, str), predictor
        keras_model = load_model_bytes(model.data, label=model.entry.operation)
        x = probe_inputs(model.operation, swept.config.data, model.table)
        reference = predict(keras_model, x)
        answers = predictor.predict(x)
        check_answers(reference, answers, integer_valued=False, label="served",
                      rounding=rounding_bound(keras_model, x, reference))
