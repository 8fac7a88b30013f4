"""KServe v2 (the Open Inference Protocol, what KServe, Triton, MLServer and Seldon speak) over
the same model store and hot swap as the TF Serving routes.

    GET  /v2                                   server metadata (extensions: binary_tensor_data)
    GET  /v2/health/live                       200 while the process answers
    GET  /v2/health/ready                      200 once a requested operation has a model
    GET  /v2/models/OP[/versions/V]            model metadata: operands FP64 [-1, N] in,
                                               result FP64 [-1] out
    GET  /v2/models/OP[/versions/V]/ready      200 {"name": OP, "ready": true}, else 503/404
    POST /v2/models/OP[/versions/V]/infer      typed tensors (`serve_tensors`) -> result

Errors are the protocol's ``{"error": "..."}`` with a 4xx (503 while loading). A binary output
(Triton's extension, asked by ``binary_data``) is the response JSON followed by the float64
bytes, its length in the ``Inference-Header-Content-Length`` header.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sweep.nets.portable import INPUT_NAME, OUTPUT_NAME
from sweep.publishing.model_store import ModelStore, Served
from sweep.publishing.serve_http import error_response, json_response, label, lookup, read_body
from sweep.publishing.serve_requests import RequestError, quoted
from sweep.publishing.serve_tensors import InferRequest, parse_infer
from sweep.publishing.serve_workers import Workers

__all__ = ["HEADER_LENGTH", "infer_answer", "kserve_routes", "model_metadata_v2"]

HEADER_LENGTH = "Inference-Header-Content-Length"
_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel"}


def model_metadata_v2(served: Served, campaign: str) -> dict[str, Any]:
    """The protocol's model metadata, plus the input names (as ``parameters``)."""
    op = served.operation
    return {
        "name": op.name,
        "versions": [str(served.entry.version)],
        "platform": _PLATFORMS.get(served.backend, served.backend),
        "inputs": [{"name": INPUT_NAME, "datatype": "FP64", "shape": [-1, op.arity]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}],
        "parameters": {
            "inputs": ",".join(op.inputs),
            "campaign": campaign,
            "sha256": served.entry.sha256,
        },
    }


def infer_answer(served: Served, asked: InferRequest) -> tuple[bytes, dict[str, str]]:
    """The infer response's bytes and headers (on a worker thread)."""
    y = np.asarray(served.predictor.predict(asked.x), dtype=np.float64).reshape(-1)
    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP64", "shape": [len(y)]}
    if asked.binary_output:
        output["parameters"] = {"binary_data_size": y.nbytes}
    else:
        output["data"] = y
    body: dict[str, Any] = {
        "model_name": served.operation.name,
        "model_version": str(served.entry.version),
        "outputs": [output],
    }
    if asked.request_id is not None:
        body["id"] = asked.request_id
    text = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"X-Model-Version": str(served.entry.version)}
    if not asked.binary_output:
        return text, {**headers, "content-type": "application/json"}
    headers[HEADER_LENGTH] = str(len(text))
    return text + y.astype("<f8").tobytes(), {**headers,
                                              "content-type": "application/octet-stream"}


def _header_length(request: Request) -> int | None:
    given = request.headers.get(HEADER_LENGTH)
    if given is None:
        return None
    if not given.isdigit() or len(given) > 12:
        raise RequestError(400, f"{HEADER_LENGTH} must be a byte count")
    return int(given)


def kserve_routes(store: ModelStore, workers: Workers, server_version: str) -> list[Route]:
    """The /v2 routes."""

    def ready() -> bool:
        return bool(store.versions())

    async def server_metadata(request: Request) -> Response:
        label(request, "/v2", store)
        return json_response(200, {"name": "sweep serve", "version": server_version,
                                   "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        label(request, "/v2/health/live", store)
        return json_response(200, {"live": True})

    async def server_ready(request: Request) -> Response:
        label(request, "/v2/health/ready", store)
        if ready():
            return json_response(200, {"ready": True})
        return json_response(503, {"ready": False, "error": "no model is loaded yet"},
                             {"Retry-After": "2"})

    def names(request: Request, suffix: str) -> tuple[str, str | None]:
        name: str = request.path_params["name"]
        version: str | None = request.path_params.get("version")
        versioned = "/versions/{version}" if version is not None else ""
        label(request, f"/v2/models/{{op}}{versioned}{suffix}", store, name)
        return name, version

    async def metadata(request: Request) -> Response:
        name, version = names(request, "")
        try:
            return json_response(200, model_metadata_v2(lookup(store, name, version),
                                                        store.campaign))
        except RequestError as e:
            return error_response(e)

    async def model_ready(request: Request) -> Response:
        name, version = names(request, "/ready")
        if not store.is_known(name):
            return error_response(RequestError(404, f"no operation {quoted(name)} is served "
                                                    "here"))
        try:
            lookup(store, name, version)
        except RequestError as e:
            status = 404 if e.status == 404 and store.served(name) is not None else 503
            return json_response(status, {"name": name, "ready": False, "error": e.message},
                                 e.headers)
        return json_response(200, {"name": name, "ready": True})

    async def infer(request: Request) -> Response:
        name, version = names(request, "/infer")
        try:
            served = lookup(store, name, version)
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise RequestError(415, f"Content-Encoding {quoted(encoding)} is not accepted; "
                                 "send the body uncompressed")
            parse = functools.partial(parse_infer, header_length=_header_length(request))
            body, headers = await workers.answer(parse, infer_answer, await read_body(request),
                                                 served)
            media = headers.pop("content-type")
            return Response(body, media_type=media, headers=headers)
        except RequestError as e:
            return error_response(e)

    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", server_ready, methods=["GET"]),
        Route("/v2/models/{name}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]
