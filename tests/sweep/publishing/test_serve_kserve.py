"""`sweep serve`'s KServe v2 routes as a real subprocess, asked by the real v2 client
(`tritonclient[http]`, binary tensors and JSON) and by plain HTTP bodies shaped as the Open
Inference Protocol's documents show them: answers identical to TF Serving's routes, errors in the
protocol's ``{"error": ...}`` shape, versioned routes, hot swap, live and ready apart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as tritonclient_http
from _hand_models import exact_add, exact_multiply, promote
from _serving import Server, start_server, wait_for_version
from tritonclient.utils import InferenceServerException

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("kserve")
    url = f"sqlite:///{folder / 'sweeps.db'}"
    promote(url, "add", exact_add(bias=0.25), 1.0)  # v1 answers a + b + 0.25
    promote(url, "multiply", exact_multiply(), 0.0)
    running = start_server(url, folder, "--poll", "0.5")
    yield running
    assert running.stop() == 0, running.logged()


def _client(server: Server) -> tritonclient_http.InferenceServerClient:
    return tritonclient_http.InferenceServerClient(server.base.removeprefix("http://"))


def _tf_predictions(server: Server, op: str, x: np.ndarray) -> np.ndarray:
    response = httpx.post(f"{server.base}/v1/models/{op}:predict",
                          json={"instances": x.tolist()}, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"], dtype=np.float64)


def test_tritonclient_sees_a_live_ready_server_and_the_models_metadata(server: Server) -> None:
    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("multiply") and client.is_model_ready("add", "1")
    assert not client.is_model_ready("cube") and not client.is_model_ready("add", "9")
    metadata = client.get_model_metadata("multiply")
    assert metadata["inputs"] == [{"name": "operands", "datatype": "FP64", "shape": [-1, 2]}]
    assert metadata["outputs"] == [{"name": "result", "datatype": "FP64", "shape": [-1]}]
    assert metadata["versions"] == ["1"] and metadata["parameters"]["inputs"] == "a,b"
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(
    ("datatype", "values"),
    [("FP64", [[2.5, 3.0], [400.0, 499.0]]), ("FP32", [[2.5, 3.0]]), ("FP16", [[0.5, 8.0]]),
     ("INT64", [[7, 6], [2**20, 3]]), ("INT32", [[-4, 9]]), ("UINT8", [[255, 1]])],
)
def test_tritonclient_infers_exactly_what_tf_serving_predicts(
    server: Server, binary: bool, datatype: str, values: list[list[float]]
) -> None:
    from tritonclient.utils import triton_to_np_dtype

    client = _client(server)
    array = np.asarray(values, dtype=triton_to_np_dtype(datatype))
    tensor = tritonclient_http.InferInput("operands", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    output = tritonclient_http.InferRequestedOutput("result", binary_data=binary)
    result = client.infer("multiply", [tensor], outputs=[output], request_id="r1")
    answered = result.as_numpy("result")
    assert answered.dtype == np.float64 and answered.shape == (len(values),)
    assert np.array_equal(answered, _tf_predictions(server, "multiply", array.astype(float)))
    response = result.get_response()
    assert response["model_name"] == "multiply" and response["model_version"] == "1"
    assert response["id"] == "r1"


def test_a_200000_instance_request_is_answered_in_binary_and_json_alike(server: Server) -> None:
    """Large bodies are answered in a worker process: the same answers as a small request's."""
    x = np.random.default_rng(1).integers(0, 1000, (200_000, 2)).astype(np.float64)
    client = _client(server)
    tensor = tritonclient_http.InferInput("operands", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    binary = client.infer("add", [tensor]).as_numpy("result")
    body = {"inputs": [{"name": "operands", "shape": list(x.shape), "datatype": "FP64",
                        "data": x.reshape(-1).tolist()}]}
    response = httpx.post(f"{server.base}/v2/models/add/infer", json=body, timeout=120)
    assert response.status_code == 200, response.text[:300]
    (output,) = response.json()["outputs"]
    assert output["shape"] == [200_000]
    assert np.array_equal(binary, np.asarray(output["data"]))
    assert np.array_equal(binary, x.sum(axis=1) + 0.25)  # the exact model, bit for bit
    assert np.array_equal(binary[:5], _tf_predictions(server, "add", x[:5]))


def test_the_protocol_documents_request_is_answered_in_its_shape(server: Server) -> None:
    """The Open Inference Protocol's example (inference_rest.md), as plain HTTP: a [2, 2] UINT32
    tensor, an id, one requested output."""
    body = (b'{"id" : "42", "inputs" : [{"name" : "operands", "shape" : [ 2, 2 ], '
            b'"datatype" : "UINT32", "data" : [ 1, 2, 3, 4 ]}], '
            b'"outputs" : [{"name" : "result"}]}')
    response = httpx.post(f"{server.base}/v2/models/add/infer", content=body,
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "model_name": "add", "model_version": "1", "id": "42",
        "outputs": [{"name": "result", "datatype": "FP64", "shape": [2], "data": [3.25, 7.25]}],
    }
    by_name = {"inputs": [{"name": "b", "shape": [2], "datatype": "FP64", "data": [3, 4]},
                          {"name": "a", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]}]}
    response = httpx.post(f"{server.base}/v2/models/add/versions/1/infer", json=by_name)
    assert response.json()["outputs"][0]["data"] == [4.25, 6.25]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "/v2/models/cube/infer", b'{"inputs": []}', 404, "no operation 'cube'"),
        ("POST", "/v2/models/divide/infer", b'{"inputs": []}', 404, "no model"),
        ("POST", "/v2/models/add/versions/9/infer", b'{"inputs": []}', 404,
         "version 9 is not served"),
        ("GET", "/v2/models/add/infer", b"", 405, "not allowed"),
        ("GET", "/v2/models/cube", b"", 404, "no operation 'cube'"),
        ("GET", "/v2/models/add/versions/2", b"", 404, "version 2 is not served"),
        ("POST", "/v2/models/add/infer", b"{", 400, "not JSON"),
        ("POST", "/v2/models/add/infer",
         b'{"inputs": [{"name": "operands", "shape": [1, 2], "datatype": "BOOL", '
         b'"data": [true, false]}]}', 400, "datatype BOOL is not numeric"),
        ("POST", "/v2/models/add/infer",
         b'{"inputs": [{"name": "operands", "shape": [1, 2], "datatype": "FP64", '
         b'"data": [9007199254740993, 1]}]}', 400, "2**53"),
    ],
)
def test_errors_are_the_protocols_error_object(
    server: Server, method: str, path: str, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.request(method, f"{server.base}{path}", content=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"] and "\n" not in response.text


def test_tritonclient_raises_the_servers_error_line(server: Server) -> None:
    tensor = tritonclient_http.InferInput("operands", [1, 2], "INT64")
    tensor.set_data_from_numpy(np.asarray([[2**53 + 1, 1]], dtype=np.int64))
    with pytest.raises(InferenceServerException, match=r"beyond .* 2\*\*53"):
        _client(server).infer("add", [tensor])


def test_a_promotion_is_served_by_the_v2_routes_without_a_restart(server: Server) -> None:
    promote(server.url, "add", exact_add(), 0.5)  # v2: exact a + b
    wait_for_version(server, "add", 2)
    body = {"inputs": [{"name": "operands", "shape": [1, 2], "datatype": "FP64",
                        "data": [2, 3]}]}
    answer = httpx.post(f"{server.base}/v2/models/add/infer", json=body).json()
    assert answer["model_version"] == "2" and answer["outputs"][0]["data"] == [5.0]
    gone = httpx.post(f"{server.base}/v2/models/add/versions/1/infer", json=body)
    assert gone.status_code == 404 and "version 2 is" in gone.json()["error"]
    assert httpx.get(f"{server.base}/v2/models/add/versions/2/ready").json() == {
        "name": "add", "ready": True}


def test_live_and_ready_differ_until_a_requested_operation_has_a_model(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """An empty registry: live at once, /healthz 200 after the first poll (its old meaning),
    not ready until the requested operation is promoted; another operation's model does not
    make it ready."""
    folder = tmp_path_factory.mktemp("ready")
    url = f"sqlite:///{folder / 'sweeps.db'}"
    promote(url, "multiply", exact_multiply(), 0.0)  # a model, but not the requested one
    running = start_server(url, folder, "add", "--poll", "0.5")
    try:
        base = running.base
        assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
        assert httpx.get(f"{base}/healthz").status_code == 200
        not_ready = httpx.get(f"{base}/v2/health/ready")
        assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
        model = httpx.get(f"{base}/v2/models/add/ready")
        assert model.status_code == 503 and model.json()["ready"] is False
        assert httpx.get(f"{base}/v2/models/multiply/ready").status_code == 404
        promote(url, "add", exact_add(), 0.0)
        deadline = time.monotonic() + 300
        while httpx.get(f"{base}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, running.logged()
            time.sleep(0.3)
        assert httpx.get(f"{base}/v2/models/add/ready").json() == {"name": "add", "ready": True}
    finally:
        assert running.stop() == 0, running.logged()


def test_server_metadata_names_the_service(server: Server) -> None:
    metadata = json.loads(httpx.get(f"{server.base}/v2").text)
    assert metadata["name"] == "sweep serve" and metadata["version"]
