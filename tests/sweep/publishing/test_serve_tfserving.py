"""`sweep serve`'s TF Serving REST API in full, as a real subprocess asked with httpx: rows, named
instances, columns answered with ``outputs``, ``signature_name`` checked, the metadata route,
``:regress``/``:classify`` refused in a line that says why, and a large request answered off the
event loop exactly as a small one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from _hand_models import exact_add, promote
from _serving import Server, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("tfserving")
    url = f"sqlite:///{folder / 'sweeps.db'}"
    promote(url, "add", exact_add(bias=0.25), 1.0)
    running = start_server(url, folder, "--poll", "0.5")
    yield running
    assert running.stop() == 0, running.logged()


def _predict(server: Server, body: object, path: str = "/v1/models/add:predict"
             ) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body, timeout=120)


def test_rows_names_and_columns_answer_alike(server: Server) -> None:
    rows = _predict(server, {"instances": [[1, 2], [3, 4]]}).json()
    named = _predict(server, {"instances": [{"b": 2, "a": 1}, {"a": 3, "b": 4}]}).json()
    columns = _predict(server, {"inputs": {"a": [1, 3], "b": [2, 4]}}).json()
    assert rows == named == {"predictions": [3.25, 7.25], "model_version": 1}
    assert columns == {"outputs": [3.25, 7.25], "model_version": 1}


@pytest.mark.parametrize("signature", ["serving_default", ""])
def test_the_models_signature_is_accepted(server: Server, signature: str) -> None:
    response = _predict(server, {"signature_name": signature, "instances": [[1, 2]]})
    assert response.json() == {"predictions": [3.25], "model_version": 1}


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ({"signature_name": "bogus", "instances": [[1, 2]]}, "/v1/models/add:predict",
         "no signature 'bogus'; the model's only signature is 'serving_default'"),
        ({"signature_name": 5, "instances": [[1, 2]]}, "/v1/models/add:predict",
         '"signature_name" must be a string'),
        ({"examples": [{"a": 1, "b": 2}]}, "/v1/models/add:regress",
         ":regress needs tf.Example inputs"),
        ({"examples": [{"a": 1, "b": 2}]}, "/v1/models/add/versions/1:classify",
         ":classify needs tf.Example inputs"),
    ],
)
def test_other_signatures_and_methods_are_a_clear_400(
    server: Server, body: object, path: str, fragment: str
) -> None:
    response = _predict(server, body, path)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


def test_metadata_gives_the_signature_and_the_input_names(server: Server) -> None:
    for path in ("/v1/models/add/metadata", "/v1/models/add/versions/1/metadata"):
        metadata = httpx.get(f"{server.base}{path}").json()
        signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["inputs"]["operands"]["dtype"] == "DT_DOUBLE"
        dims = signature["inputs"]["operands"]["tensor_shape"]["dim"]
        assert [d["size"] for d in dims] == ["-1", "2"]
        assert metadata["inputs"] == ["a", "b"] and metadata["model_spec"]["version"] == "1"
    assert httpx.get(f"{server.base}/v1/models/add/versions/3/metadata").status_code == 404


@pytest.mark.parametrize("form", ["rows", "columns"])
def test_a_200000_instance_request_is_answered_exactly(server: Server, form: str) -> None:
    x = np.random.default_rng(2).integers(-1000, 1000, (200_000, 2))
    body: object = (
        {"instances": x.tolist()} if form == "rows"
        else {"inputs": {"a": x[:, 0].tolist(), "b": x[:, 1].tolist()}}
    )
    response = _predict(server, body)
    assert response.status_code == 200, response.text[:300]
    answered = response.json()["predictions" if form == "rows" else "outputs"]
    assert np.array_equal(np.asarray(answered), x.sum(axis=1) + 0.25)
    bad = x.tolist()
    bad[123_456][1] = "7"
    refused = _predict(server, {"instances": bad})
    assert refused.status_code == 400
    assert refused.json() == {"error": 'instance 123457: "7" is not a number'}
