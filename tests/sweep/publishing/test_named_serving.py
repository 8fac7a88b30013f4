"""A real sweep of a four-input operation over real ranges (Keras, through the CLI), read back
by name: `sweep best`/`sweep predict` in subprocesses, then `sweep serve` as a real process
asked with httpx in TF Serving's row, named-instance and columnar shapes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _finished_sweep import sweep_cli
from _serving import Server, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

GAS_TOML = """
[campaign]
operations = ["gas"]
[expressions]
gas = "n*R*T/V"
[inputs.gas]
n = { low = 1, high = 5, kind = "real" }
R = { low = 8, high = 9, kind = "real" }
T = { low = 250, high = 350, kind = "real" }
V = { low = 1, high = 10, kind = "real" }
[data]
examples = 600
test_examples = 200
extrapolation_examples = 200
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""
ROW = {"n": 1.5, "R": 8.3, "T": 300, "V": 2}
EXACT = 1.5 * 8.3 * 300 / 2


@dataclass(frozen=True)
class Swept:
    folder: Path
    url: str


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    folder = tmp_path_factory.mktemp("gas")
    (folder / "gas.toml").write_text(GAS_TOML)
    url = f"sqlite:///{folder / 'sweeps.db'}"
    done = sweep_cli("run", "--config", "gas.toml", "--storage", url, "--trials", "3",
                     cwd=folder)
    assert done.returncode == 0, done.stderr
    return Swept(folder, url)


@pytest.fixture(scope="module")
def server(swept: Swept) -> Iterator[Server]:
    running = start_server(swept.url, swept.folder)
    yield running
    assert running.stop() == 0, running.logged()


def test_the_sweep_is_listed_with_its_inputs_and_answered_by_name(swept: Swept) -> None:
    done = sweep_cli("best", "--format", "json", "--storage", swept.url, cwd=swept.folder)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["operation"] == "gas" and row["inputs"] == ["n", "R", "T", "V"]
    assert row["integer_valued"] is False
    named = [f"{k}={v}" for k, v in reversed(list(ROW.items()))]  # V=2 T=300 R=8.3 n=1.5
    done = sweep_cli("predict", "gas", *named, "--storage", swept.url, cwd=swept.folder)
    assert done.returncode == 0, done.stderr
    match = re.match(r"gas\(n=1\.5, R=8\.3, T=300, V=2\) = (\S+) ", done.stdout)
    assert match is not None, done.stdout
    assert float(match.group(1)) == pytest.approx(EXACT, rel=1e-3)  # a real, unrounded answer
    assert match.group(1) != str(round(EXACT))
    rows = swept.folder / "rows.csv"
    rows.write_text("T,V,n,R\n300,2,1.5,8.3\n")
    done = sweep_cli("predict", "gas", "--input", str(rows), "--format", "json",
                     "--storage", swept.url, cwd=swept.folder)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["instances"] == [[1.5, 8.3, 300, 2]] and body["rounded"] == [False]
    assert body["exact"] == [pytest.approx(EXACT)]
    assert body["answers"] == [pytest.approx(float(match.group(1)), rel=1e-8)]
    done = sweep_cli("predict", "gas", "n=1.5", "R=8.3", "T=300", "--storage", swept.url,
                     cwd=swept.folder)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "sweep: error: no value for gas's input V; its inputs are n, R, T, V"
    )


def _predict(server: Server, body: object) -> httpx.Response:
    return httpx.post(f"{server.base}/v1/models/gas:predict", json=body, timeout=30)


def test_the_service_takes_rows_named_instances_and_named_columns(server: Server) -> None:
    rows = _predict(server, {"instances": [list(ROW.values()), [1, 8, 250, 1]]})
    assert rows.status_code == 200, rows.text
    body = rows.json()
    assert body.keys() == {"predictions", "model_version"}  # TF Serving's shape
    assert body["predictions"] == [pytest.approx(EXACT, rel=1e-3), pytest.approx(2000, rel=1e-3)]
    asked = _predict(server, {"instances": [list(ROW.values()), [1, 8, 250, 1]],
                              "answers": True}).json()
    assert asked["rounded"] == [False, False] and asked["beyond_2_53"] == [False, False]
    assert asked["answers"] == body["predictions"]  # real inputs: nothing is rounded
    shuffled = {k: ROW[k] for k in ("V", "T", "R", "n")}
    named = _predict(server, {"instances": [shuffled, {"n": 1, "R": 8, "T": 250, "V": 1}]})
    assert named.status_code == 200 and named.json()["predictions"] == body["predictions"]
    columns = _predict(server, {"inputs": {"T": [300, 250], "V": [2, 1], "R": [8.3, 8],
                                           "n": [1.5, 1]}})
    assert columns.status_code == 200
    assert columns.json()["outputs"] == body["predictions"]  # TF Serving's columnar answer
    assert columns.headers["X-Model-Version"] == str(body["model_version"])
    # The signature's one input by its name, as a client reading the metadata sends it.
    tensor = _predict(
        server, {"instances": [{"operands": list(ROW.values())}, {"operands": [1, 8, 250, 1]}]}
    )
    assert tensor.status_code == 200 and tensor.json()["predictions"] == body["predictions"]
    tensor_columns = _predict(
        server, {"inputs": {"operands": [list(ROW.values()), [1, 8, 250, 1]]}}
    )
    assert tensor_columns.status_code == 200
    assert tensor_columns.json()["outputs"] == body["predictions"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [{**ROW, "x": 1}]}, "instance 1: gas has no input 'x'; its inputs are n, R"),
        ({"instances": [{k: v for k, v in ROW.items() if k != "T"}]},
         "instance 1: no value for gas's input T; its inputs are n, R, T, V"),
        ({"inputs": {"n": [1.5], "R": [8.3], "T": [300]}},
         "\"inputs\": no value for gas's input V"),
        ({"instances": [[1.5, 8.3, 300]]}, "gas takes 4 number(s) per instance"),
        ({"instances": [{**ROW, "V": 0}]}, "gas is not defined at n=1.5, R=8.3, T=300, V=0"),
    ],
)
def test_a_wrong_name_is_a_400_naming_it(server: Server, body: object, fragment: str) -> None:
    response = _predict(server, body)
    assert response.status_code == 400 and "\n" not in response.text
    assert fragment in response.json()["error"]
    repeated = httpx.post(
        f"{server.base}/v1/models/gas:predict", timeout=30,
        content=b'{"instances": [{"n": 1, "R": 1, "T": 1, "V": 1, "n": 2}]}',
    )
    assert repeated.status_code == 400 and "'n' is given twice" in repeated.json()["error"]
    assert _predict(server, {"instances": [ROW]}).status_code == 200  # still serving


def test_the_status_and_metadata_list_the_inputs(server: Server) -> None:
    status = httpx.get(f"{server.base}/v1/models/gas", timeout=30).json()
    assert status["inputs"] == ["n", "R", "T", "V"] and status["arity"] == 4
    assert status["integer_valued"] is False and status["kind"] == "expression"
    assert [r["kind"] for r in status["input_ranges"]] == ["real"] * 4
    metadata = httpx.get(f"{server.base}/v1/models/gas/metadata", timeout=30).json()
    assert metadata["inputs"] == ["n", "R", "T", "V"]
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = signature["inputs"]["operands"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "4"]
    version = status["model_version"]
    assert httpx.get(f"{server.base}/v1/models/gas/versions/{version}/metadata",
                     timeout=30).status_code == 200
