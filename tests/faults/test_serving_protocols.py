"""Hostile requests on `sweep serve`'s newer routes (KServe v2, TF Serving's signature and
columns, /metrics): any document, any bytes, every limit. The reader is fuzzed directly (fast);
the limits are checked on a real server, which must go on answering."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.publishing.http_limits import MAX_BODY_BYTES
from sweep.publishing.serve_requests import RequestError, parse_request
from sweep.publishing.serve_tensors import parse_infer

ADD = BUILTIN_OPERATIONS["add"]

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from(["operands", "a", "b", "FP64", "FP32", "INT64", "UINT8", "BOOL", "result"]),
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["name", "shape", "datatype", "data", "parameters", "inputs", "outputs",
                         "id", "binary_data_size", "binary_data", "x"]), children, max_size=5),
    max_leaves=30,
)
_tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["operands", "a", "b", "c"]),
     "shape": st.lists(st.integers(-2, 5), max_size=3),
     "datatype": st.sampled_from(["FP64", "FP32", "FP16", "INT8", "UINT64", "BOOL", "X"]),
     "data": st.lists(st.one_of(_scalars, st.lists(_scalars, max_size=3)), max_size=12)},
)


def _refused_cleanly(call: Any) -> None:
    try:
        call()
    except RequestError as e:
        assert 400 <= e.status < 500 and "\n" not in e.message and len(e.message) < 1000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_json)
def test_any_json_document_is_answered_or_refused_in_one_line(document: Any) -> None:
    body = json.dumps(document).encode()
    _refused_cleanly(lambda: parse_infer(body, ADD))
    _refused_cleanly(lambda: parse_infer(json.dumps({"inputs": document}).encode(), ADD))
    _refused_cleanly(lambda: parse_request(body, ADD))


@settings(max_examples=150, deadline=None)
@given(tensors=st.lists(_tensor, min_size=1, max_size=3),
       outputs=st.none() | st.lists(_json, max_size=2))
def test_tensor_shaped_requests_are_answered_or_refused_in_one_line(
    tensors: list[dict[str, Any]], outputs: Any
) -> None:
    document: dict[str, Any] = {"inputs": tensors}
    if outputs is not None:
        document["outputs"] = outputs
    _refused_cleanly(lambda: parse_infer(json.dumps(document).encode(), ADD))


@settings(max_examples=150, deadline=None)
@given(datatype=st.sampled_from(["FP64", "FP32", "FP16", "INT16", "INT64", "UINT32", "UINT64"]),
       rows=st.integers(0, 4), size=st.integers(-1, 80), tail=st.binary(max_size=80),
       declared=st.integers(0, 400))
def test_binary_tensors_of_any_bytes_are_answered_or_refused_in_one_line(
    datatype: str, rows: int, size: int, tail: bytes, declared: int
) -> None:
    header = json.dumps({"inputs": [{"name": "operands", "shape": [rows, 2],
                                     "datatype": datatype,
                                     "parameters": {"binary_data_size": size}}]}).encode()
    body = header + tail
    _refused_cleanly(lambda: parse_infer(body, ADD, header_length=len(header)))
    _refused_cleanly(lambda: parse_infer(body, ADD, header_length=declared))


# --- on a real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from _hand_models import exact_add, promote
    from _serving import start_server

    folder = tmp_path_factory.mktemp("protocols")
    url = f"sqlite:///{folder / 'sweeps.db'}"
    promote(url, "add", exact_add(), 1.0)
    running = start_server(url, folder)
    yield running
    assert running.stop() == 0, running.logged()
    assert "Traceback" not in running.logged()


def _infer_body(data: Any, shape: list[int]) -> dict[str, Any]:
    return {"inputs": [{"name": "operands", "shape": shape, "datatype": "FP64", "data": data}]}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "fragment"),
    [
        ("/v2/models/add/infer", b"x" * (MAX_BODY_BYTES + 1), {}, 413, "the limit is"),
        ("/v2/models/add/infer", json.dumps(_infer_body([1, 2], [200_001, 2])).encode(), {},
         413, "the limit is 200000"),
        ("/v2/models/add/infer",
         b'{"inputs": [{"name": "operands", "shape": [1, 2], "datatype": "FP64", "data": '
         + b"[" * 1000 + b"]" * 1000 + b"}]}", {}, 400, "input 'operands'"),
        ("/v2/models/add/infer", b"[" * 2000 + b"]" * 2000, {}, 400, "not JSON"),
        ("/v2/models/add/infer", json.dumps(_infer_body([1, 2], [1, 2])).encode(),
         {"Content-Encoding": "gzip"}, 415, "send the body uncompressed"),
        ("/v2/models/add/infer", json.dumps(_infer_body([1, 2], [1, 2])).encode(),
         {"Inference-Header-Content-Length": "12abc"}, 400, "must be a byte count"),
        ("/v2/models/add/infer", json.dumps(_infer_body([1, 2], [1, 2])).encode(),
         {"Inference-Header-Content-Length": "99999999"}, 400, "more than the body's"),
        ("/v2/models/" + "q" * 5000 + "/infer", b"{}", {}, 404, "..."),
        ("/v2/models/add/versions/" + "9" * 5000 + "/infer", b"{}", {}, 404, "..."),
        ("/v1/models/add:predict", json.dumps({"signature_name": "s" * 5000,
                                               "instances": [[1, 2]]}).encode(), {}, 400, "..."),
        ("/v1/models/add:predict", json.dumps({"inputs": {"a": [1] * 3, "b": [2] * 4}}).encode(),
         {}, 400, "all of one length"),
    ],
)
def test_limits_on_the_new_routes_are_one_json_line_and_the_service_goes_on(
    server: Any, path: str, content: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = httpx.post(f"{server.base}{path}", content=content, headers=headers, timeout=60)
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    assert "\n" not in response.text and len(response.text) < 600
    assert fragment in response.json()["error"]
    ok = httpx.post(f"{server.base}/v2/models/add/infer", json=_infer_body([2, 3], [1, 2]))
    assert ok.json()["outputs"][0]["data"] == [5.0]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_slow_head_on_a_v2_route_is_cut_off_like_any_other(server: Any) -> None:
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = connection.recv(4096)
    assert b" 408 " in answer.split(b"\r\n")[0] and time.monotonic() - started < 20
