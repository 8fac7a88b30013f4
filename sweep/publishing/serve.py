"""`sweep serve`: the registry's best models over HTTP, in TF Serving's REST shape.

    POST /v1/models/OP:predict    {"instances": [[a, b], ...]} -> {"predictions": [...], ...}
    GET  /v1/models/OP            TF Serving's model status, plus version, sha256, metrics
    GET  /healthz                 200 once the first load finished, 503 before

uvicorn (httptools) runs a small Starlette app over a `ModelStore` (`model_store`), which
holds one predictor per operation and swaps in newer bests while this serves; by default those
are onnxruntime sessions converted in a child process (`model_backends`), so this process never
loads TensorFlow (r17: 2-4 ms p50 with 8 clients; any TensorFlow predictor costs 8-13 ms). The
answers are exactly those of `sweep pull --format onnx`. Every response names the version that
answered it (`model_version`, header `X-Model-Version`). Reads storage only. Nothing from the
storage URL reaches a response or a log line unmasked.

Every input is bounded before it costs memory or time: the request head (URL, header fields and
their bytes, the seconds to send them) and the body's seconds by `http_limits`, under the app,
where uvicorn and httptools bound nothing; the body's bytes as the app reads it; the document's
nesting by orjson (under 1,024 levels), its instances by `parse_instances`. Each refusal is one
JSON line with a 4xx status, and values echoed back are cut to about 40 characters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, ServeError, first_line
from sweep.nets.portable import missing_modules
from sweep.problem.operations import Operation
from sweep.publishing.http_limits import MAX_BODY_BYTES, guarded_protocol
from sweep.publishing.model_backends import BACKENDS, choose_backend
from sweep.publishing.model_store import ModelStore, Served
from sweep.publishing.models import check_pairs

__all__ = [
    "BACKENDS",
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "MAX_INSTANCES",
    "SERVER_MODULES",
    "SERVE_EXTRA",
    "ModelStore",
    "choose_backend",
    "create_app",
    "parse_instances",
    "serve",
]

DEFAULT_PORT = 8500
MAX_INSTANCES = 200_000
_ECHO_CHARS = 40
SERVE_EXTRA = 'pip install "neural-arithmetic-sweep[serve]"'
SERVER_MODULES = ("uvicorn", "httptools", "starlette", "orjson")
_EXACT_INTEGER = 2**53


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def parse_instances(body: bytes, op: Operation) -> npt.NDArray[np.float64]:
    """``{"instances": [[a, b], ...]}`` -> a float64 array, or one 400 line naming the problem.

    Only JSON numbers are numbers (not ``true``, not ``"3"``); NaN and infinities are not JSON
    and are refused by the parser; magnitudes beyond 2**53 and points outside the operation's
    domain are refused by `check_pairs`.
    """
    import orjson

    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _HTTPError(400, f"the body is not JSON: {first_line(e)}") from None
    shape = "[[a, b], ...]" if op.arity == 2 else "[[a], ...] or [a, ...]"
    if not isinstance(document, dict) or "instances" not in document:
        raise _HTTPError(400, f'expected a JSON object {{"instances": {shape}}}')
    extra = sorted(set(document) - {"instances", "signature_name"})
    if extra:
        raise _HTTPError(400, f"unknown field {_shown(extra[0])}; expected only \"instances\"")
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise _HTTPError(400, f'"instances" must be a non-empty list: {shape}')
    if len(instances) > MAX_INSTANCES:
        raise _HTTPError(
            413, f"{len(instances)} instances in one request; the limit is {MAX_INSTANCES}"
        )
    for index, row in enumerate(instances):
        if op.arity == 1 and type(row) in (int, float):
            row = [row]
        if type(row) is not list or len(row) != op.arity:
            raise _HTTPError(
                400, f"instance {index + 1}: {op.name} takes {op.arity} number(s) per instance "
                f"({shape}), got {_short(row)}"
            )
        for value in row:
            kind = type(value)
            if kind is int and abs(value) > _EXACT_INTEGER:
                # Exact in JSON, but float64 would round it to another number: refuse it here.
                raise _HTTPError(400, f"instance {index + 1}: {value} is beyond what a float64 "
                                 f"model can represent exactly (the limit is |x| <= 2**53 = "
                                 f"{_EXACT_INTEGER})")
            if kind is not int and kind is not float:  # bool subclasses int: compare exactly
                raise _HTTPError(400, f"instance {index + 1}: {_short(value)} is not a number")
    x = np.asarray(instances, dtype=np.float64).reshape(len(instances), op.arity)
    try:
        check_pairs(op, x, what="instance")
    except ConfigError as e:
        raise _HTTPError(400, str(e)) from None
    return x


def _short(value: Any, limit: int = 60) -> str:
    """A parsed JSON value as compact JSON, cut to `limit` characters.

    Written out by hand, a piece at a time, and only as far as shown: a value may nest 1,000
    levels deep (orjson reads 1,024), past what `repr` and `orjson.dumps` recurse through.
    """
    import orjson

    pieces: list[str] = []
    size = 0
    pending: list[Any] = [value]  # values to write, and _Piece texts, last first
    while pending and size <= limit:
        item = pending.pop()
        if isinstance(item, _Piece):
            text = item.text
        elif isinstance(item, (list, dict)):
            opening, closing = ("[", "]") if isinstance(item, list) else ("{", "}")
            text = opening
            parts: list[Any] = []
            # Each element shows at least one character: more than `limit` are never reached.
            for index, element in enumerate(item.items() if isinstance(item, dict) else item):
                if index > limit:
                    break
                if index:
                    parts.append(_Piece(","))
                if isinstance(item, dict):
                    key, element = element
                    parts.extend((key, _Piece(":")))
                parts.append(element)
            pending.append(_Piece(closing))
            pending.extend(reversed(parts))
        elif isinstance(item, str):
            text = orjson.dumps(item[: limit + 1]).decode()
        else:
            try:
                text = orjson.dumps(item).decode()
            except TypeError:
                text = repr(item)[: limit + 1]
        pieces.append(text)
        size += len(text)
    text = "".join(pieces)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Piece:
    """Literal text in `_short`'s queue of values to write."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _shown(text: str) -> str:
    """A value from the request (a path segment, a field name) quoted and cut to ~40 characters."""
    return repr(text if len(text) <= _ECHO_CHARS else text[: _ECHO_CHARS - 3] + "...")


def _model_status(store: ModelStore, name: str) -> dict[str, Any]:
    served = store.served(name)
    status = store.status(name)
    body: dict[str, Any] = {"operation": name, "campaign": store.campaign}
    if served is None:
        body["model_version_status"] = [
            {
                "version": "0",
                "state": status.state or "START",
                "status": {
                    "error_code": "UNAVAILABLE" if status.state == "LOADING" else "NOT_FOUND",
                    "error_message": status.error or "loading",
                },
            }
        ]
        return body
    entry = served.entry
    body["model_version_status"] = [
        {
            "version": str(entry.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": status.error},
        }
    ]
    body.update(
        model_version=entry.version,
        sha256=entry.sha256,
        trial=entry.trial_number,
        created_at=entry.created_at.isoformat(),
        architecture=str(entry.params.get("architecture", "")),
        params=entry.params,
        metrics=entry.metrics,
        arity=served.operation.arity,
        integer_valued=served.operation.integer_valued,
        backend=served.backend,
    )
    return body


def create_app(store: ModelStore) -> Any:
    """The Starlette app over `store` (which the app starts and stops with its lifespan)."""
    import orjson
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route

    def json_response(
        status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Response:
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
            status_code=status,
            media_type="application/json",
            headers=headers,
        )

    def error(e: _HTTPError) -> Response:
        return json_response(e.status, {"error": e.message}, e.headers)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _HTTPError(400, "Content-Length is not a number")
            if int(declared) > MAX_BODY_BYTES:
                raise _HTTPError(413, f"the body is {declared} bytes; the limit is "
                                 f"{MAX_BODY_BYTES} bytes")
        chunks: list[bytes] = []
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > MAX_BODY_BYTES:
                    raise _HTTPError(
                        413, f"the body exceeds the limit of {MAX_BODY_BYTES} bytes"
                    )
                chunks.append(chunk)
        except ClientDisconnect:
            # The client left, or the server cut off a slow body and answered it (408): this
            # answer goes nowhere, and it is no error of ours to log.
            raise _HTTPError(400, "the connection closed before the body arrived") from None
        return b"".join(chunks)

    def lookup(name: str, version: str | None) -> Served:
        if not store.is_known(name):
            raise _HTTPError(404, f"no operation {_shown(name)} is served here")
        served = store.served(name)
        if served is None:
            status = store.status(name)
            if status.state == "LOADING":
                raise _HTTPError(503, f"{name} is loading; try again shortly",
                                 {"Retry-After": "2"})
            raise _HTTPError(404, f"no model for {name!r} yet: {status.error}")
        if version is not None and version != str(served.entry.version):
            shown = version if version.isdigit() and len(version) <= _ECHO_CHARS else (
                _shown(version)
            )
            raise _HTTPError(
                404, f"{name} version {shown} is not served (version "
                f"{served.entry.version} is)"
            )
        return served

    async def model(request: Request) -> Response:
        target: str = request.path_params["target"]
        version: str | None = request.path_params.get("version")
        try:
            if version is None:
                name, colon, method = target.partition(":")
            else:  # /v1/models/OP/versions/N:predict
                name = target
                version, colon, method = version.partition(":")
            if colon:
                if method != "predict":
                    raise _HTTPError(404, f"unknown method {_shown(method)}; use :predict")
                if request.method != "POST":
                    raise _HTTPError(405, "use POST for :predict")
                served = lookup(name, version)
                x = parse_instances(await read_body(request), served.operation)
                y = served.predictor.predict(x)
                version_text = str(served.entry.version)
                return json_response(
                    200,
                    {"predictions": y, "model_version": served.entry.version},
                    {"X-Model-Version": version_text},
                )
            if request.method != "GET":
                raise _HTTPError(405, f"use GET for /v1/models/{name}")
            if not store.is_known(name):
                raise _HTTPError(404, f"no operation {_shown(name)} is served here")
            if version is not None:
                lookup(name, version)
            return json_response(200, _model_status(store, name))
        except _HTTPError as e:
            return error(e)

    async def healthz(request: Request) -> Response:
        if not store.ready.is_set():
            return json_response(503, {"status": "loading"}, {"Retry-After": "2"})
        return json_response(200, {"status": "ok", "models": store.versions()})

    async def not_found(request: Request, exc: Exception) -> Response:
        # Also the answer to a bug (500): JSON like every other, though Starlette still hands
        # the exception on to uvicorn's log, where a bug belongs.
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: f"no such path {_shown(request.url.path)}", 405: "method not allowed"}.get(
            status, "internal error"
        )
        return json_response(status, {"error": message})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        store.start()
        try:
            yield
        finally:
            store.stop()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/models/{target}", model, methods=["GET", "POST"]),
        Route("/v1/models/{target}/versions/{version}", model, methods=["GET", "POST"]),
    ]
    handlers: dict[Any, Callable[..., Any]] = {404: not_found, 405: not_found, 500: not_found}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


def serve(
    store: ModelStore,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Bind, then run uvicorn until SIGINT/SIGTERM. Raises ServeError if it cannot listen."""
    missing = missing_modules(SERVER_MODULES)
    if missing:
        raise ConfigError(f"sweep serve needs {', '.join(missing)}; install it with: {SERVE_EXTRA}")
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    except (socket.gaierror, OverflowError, TypeError) as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e}") from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(store),
        http=guarded_protocol(),
        ws="none",  # no WebSocket route: an Upgrade is never handed to a WebSocket library
        log_level="warning",
        access_log=False,  # an access line per request would cost more than the answer
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    if on_listening is not None:
        on_listening(f"http://{shown}:{bound}")
    server.run(sockets=[sock])

