"""TF Serving's REST API over the model store: predict, model status, metadata.

    POST /v1/models/OP[/versions/N]:predict   {"instances": [[n, R, T, V], ...]} (rows),
                                              {"instances": [{"n": .., ...}, ...]} (by name)
                                              -> {"predictions": [...]}; {"inputs": {"n": [..],
                                              ...}} (columns) -> {"outputs": [...]};
                                              "signature_name": "serving_default" or absent
    GET  /v1/models/OP[/versions/N]           model status (plus inputs, version, sha256, ...)
    GET  /v1/models/OP[/versions/N]/metadata  the signature (plus the input names)

``:regress`` and ``:classify`` take tf.Example features and need a regression or
classification signature; the exported model has only the predict one, so they are refused
with a 400 that says so, not a 404.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sweep.nets.portable import SIGNATURE_NAME
from sweep.publishing.model_store import ModelStore, Served, model_metadata, model_status
from sweep.publishing.serve_http import error_response, json_response, label, lookup, read_body
from sweep.publishing.serve_requests import (
    ParsedRequest,
    RequestError,
    answers_for,
    parse_request,
    quoted,
)
from sweep.publishing.serve_workers import Workers

__all__ = ["predict_answer", "tfserving_routes"]

_OTHER_METHODS = ("regress", "classify")


def predict_answer(served: Served, asked: ParsedRequest) -> bytes:
    """The predict response's JSON (on a worker thread: the prediction releases the GIL)."""
    y = served.predictor.predict(asked.x)
    body: dict[str, Any] = {
        "outputs" if asked.columnar else "predictions": y,
        "model_version": served.entry.version,
    }
    if asked.answers:
        body.update(answers_for(asked.x, y, served.operation))
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def tfserving_routes(store: ModelStore, workers: Workers) -> list[Route]:
    """The /v1 routes."""

    async def model(request: Request) -> Response:
        target: str = request.path_params["target"]
        version: str | None = request.path_params.get("version")
        if version is None:
            name, colon, method = target.partition(":")
        else:  # /v1/models/OP/versions/N:predict
            name = target
            version, colon, method = version.partition(":")
        versioned = "/versions/{version}" if version is not None else ""
        route = f"/v1/models/{{op}}{versioned}" + (f":{method}" if method in (
            "predict", *_OTHER_METHODS) else ":other" if colon else "")
        label(request, route, store, name)
        try:
            if colon:
                if method in _OTHER_METHODS:
                    raise RequestError(
                        400, f":{method} needs tf.Example inputs and a {method} signature; "
                        f"this model has only the predict signature {SIGNATURE_NAME!r}: use "
                        ":predict"
                    )
                if method != "predict":
                    raise RequestError(404, f"unknown method {quoted(method)}; use :predict")
                if request.method != "POST":
                    raise RequestError(405, "use POST for :predict")
                served = lookup(store, name, version)
                answer = await workers.answer(parse_request, predict_answer,
                                              await read_body(request), served)
                return Response(answer, media_type="application/json",
                                headers={"X-Model-Version": str(served.entry.version)})
            if request.method != "GET":
                raise RequestError(405, f"use GET for /v1/models/{name}")
            if not store.is_known(name):
                raise RequestError(404, f"no operation {quoted(name)} is served here")
            if version is not None:
                lookup(store, name, version)
            return json_response(200, model_status(store, name))
        except RequestError as e:
            return error_response(e)

    async def metadata(request: Request) -> Response:
        name: str = request.path_params["target"]
        version: str | None = request.path_params.get("version")
        versioned = "/versions/{version}" if version is not None else ""
        label(request, f"/v1/models/{{op}}{versioned}/metadata", store, name)
        try:
            return json_response(200, model_metadata(lookup(store, name, version)))
        except RequestError as e:
            return error_response(e)

    return [
        Route("/v1/models/{target}", model, methods=["GET", "POST"]),
        Route("/v1/models/{target}/versions/{version}", model, methods=["GET", "POST"]),
        Route("/v1/models/{target}/metadata", metadata, methods=["GET"]),
        Route("/v1/models/{target}/versions/{version}/metadata", metadata, methods=["GET"]),
    ]
