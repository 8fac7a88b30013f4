"""`sweep serve`: the registry's best models over HTTP, in TF Serving's REST shape.

    POST /v1/models/OP:predict    {"instances": [[n, R, T, V], ...]} -> {"predictions": [...], ...}
                                  {"instances": [{"n": .., "R": .., ...}, ...]}  (by name)
                                  {"inputs": {"n": [..], "R": [..], ...}} -> {"outputs": [...]}
    GET  /v1/models/OP            TF Serving's model status, plus inputs, version, sha256, metrics
    GET  /v1/models/OP/metadata   TF Serving's signature, plus the input names
    GET  /healthz                 200 once the first load finished, 503 before

Predictions are the network's raw outputs, TF Serving's shape exactly. With ``"answers": true``
in the request, the response adds per instance `answers` (rounded only where the operation is
integer-valued and every input of the row is a whole number, as `sweep predict` rounds),
`rounded`, and `beyond_2_53` (the answer's magnitude is past 2**53, where float64 no longer
holds every whole number).

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, ServeError, first_line
from sweep.nets.portable import missing_modules
from sweep.problem.operations import Operation
from sweep.publishing.http_limits import MAX_BODY_BYTES, guarded_protocol
from sweep.publishing.model_backends import BACKENDS, choose_backend
from sweep.publishing.model_store import ModelStore, Served, model_metadata, model_status
from sweep.publishing.models import (
    answers_of,
    arrange_named,
    beyond_exact,
    check_pairs,
    rounded_rows,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "MAX_INSTANCES",
    "SERVER_MODULES",
    "SERVE_EXTRA",
    "ModelStore",
    "ParsedRequest",
    "RequestError",
    "choose_backend",
    "create_app",
    "parse_instances",
    "parse_request",
    "serve",
]

DEFAULT_PORT = 8500
MAX_INSTANCES = 200_000
_ECHO_CHARS = 40
SERVE_EXTRA = 'pip install "neural-arithmetic-sweep[serve]"'
SERVER_MODULES = ("uvicorn", "httptools", "starlette", "orjson")
_EXACT_INTEGER = 2**53


class RequestError(Exception):
    """A request refused: its HTTP status and the one line of its JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def parse_instances(body: bytes, op: Operation) -> npt.NDArray[np.float64]:
    """A predict request -> a float64 array (n, arity) in `op.inputs` order, or one 4xx line
    naming the problem.

    TF Serving's row format, ``{"instances": [[n, R, T, V], ...]}`` (values in the operation's
    input order; ``[a, ...]`` for a one-input operation) or ``{"instances": [{"n": .., ...},
    ...]}`` (by name), and its columnar format, ``{"inputs": {"n": [..], ...}}`` (or ``{"inputs":
    [[..], ...]}``). By name, every input exactly once. Only JSON numbers are numbers (not
    ``true``, not ``"3"``); NaN and infinities are not JSON and are refused by the parser;
    magnitudes beyond 2**53 and points outside the operation's domain by `check_pairs`.
    """
    return parse_request(body, op).x


@dataclass(frozen=True)
class ParsedRequest:
    """A predict request: its rows (in `op.inputs` order), whether it was columnar (TF Serving
    answers ``"inputs"`` with ``"outputs"``, not ``"predictions"``) and whether it asked for
    the answers as `sweep predict` gives them (``"answers": true``)."""

    x: npt.NDArray[np.float64]
    columnar: bool
    answers: bool


def parse_request(body: bytes, op: Operation) -> ParsedRequest:
    """`parse_instances`, with the request's form (`ParsedRequest`)."""
    import orjson

    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestError(400, f"the body is not JSON: {first_line(e)}") from None
    rows = f"[[{', '.join(op.inputs)}], ...]" + (" or [a, ...]" if op.arity == 1 else "")
    by_name = ", ".join(f'"{name}": [...]' for name in op.inputs)
    if not isinstance(document, dict) or not {"instances", "inputs"} & set(document):
        raise RequestError(
            400, f'expected a JSON object {{"instances": {rows}}} or {{"inputs": {{{by_name}}}}}'
        )
    extra = sorted(set(document) - {"instances", "inputs", "signature_name", "answers"})
    if extra:
        raise RequestError(
            400, f'unknown field {_shown(extra[0])}; expected "instances" or "inputs"'
        )
    if "instances" in document and "inputs" in document:
        raise RequestError(400, 'give "instances" (rows) or "inputs" (columns), not both')
    if not isinstance(document.get("signature_name", ""), str):
        raise RequestError(400, '"signature_name" must be a string')
    if not isinstance(document.get("answers", False), bool):
        raise RequestError(400, '"answers" must be true or false')
    columnar = "inputs" in document
    given = document["inputs"] if columnar else document["instances"]
    if columnar and isinstance(given, dict):
        x = _columns(given, op)
        named = True
    else:
        field = "inputs" if columnar else "instances"
        if not isinstance(given, list) or not given:
            raise RequestError(400, f'"{field}" must be a non-empty list: {rows}')
        _check_count(len(given))
        checked: list[list[float]] = []
        named = False
        for index, row in enumerate(given):
            if type(row) is dict:
                named = True
                values = _named(row, op, f"instance {index + 1}")
            else:
                if op.arity == 1 and type(row) in (int, float):
                    row = [row]
                if type(row) is not list or len(row) != op.arity:
                    raise RequestError(
                        400, f"instance {index + 1}: {op.name} takes {op.arity} number(s) per "
                        f"instance ({rows}, or by name), got {_short(row)}"
                    )
                values = row
            for value in values:
                kind = type(value)  # the common case inline: 200,000 instances in a request
                if kind is not float and (kind is not int or abs(value) > _EXACT_INTEGER):
                    _number(value, f"instance {index + 1}")  # raises, naming it
            checked.append(values)
        x = np.asarray(checked, dtype=np.float64).reshape(len(checked), op.arity)
    if named:
        _refuse_repeated_names(body)
    try:
        check_pairs(op, x, what="instance")
    except ConfigError as e:
        raise RequestError(400, str(e)) from None
    return ParsedRequest(x, columnar, document.get("answers", False))


def _answers(
    x: npt.NDArray[np.float64], y: npt.ArrayLike, op: Operation
) -> dict[str, npt.NDArray[Any]]:
    """``"answers": true``: per instance the answer as `sweep predict` gives it (rounded only
    for an integer-valued operation on whole inputs), whether it was rounded, and whether its
    magnitude is beyond 2**53 (where float64 no longer holds every whole number)."""
    rounded = rounded_rows(x, op.integer_valued)
    answers = answers_of(np.asarray(y, dtype=np.float64), rounded)
    return {"answers": answers, "rounded": rounded, "beyond_2_53": beyond_exact(answers)}


def _check_count(count: int) -> None:
    if count > MAX_INSTANCES:
        raise RequestError(413, f"{count} instances in one request; the limit is {MAX_INSTANCES}")


def _number(value: Any, where: str) -> float:
    """A JSON number as float64: exact (ints beyond 2**53 refused), never a bool or a string."""
    kind = type(value)
    if kind is int and abs(value) > _EXACT_INTEGER:
        # Exact in JSON, but float64 would round it to another number: refuse it here.
        raise RequestError(400, f"{where}: {value} is beyond what a float64 model can represent "
                         f"exactly (the limit is |x| <= 2**53 = {_EXACT_INTEGER})")
    if kind is not int and kind is not float:  # bool subclasses int: compare exactly
        raise RequestError(400, f"{where}: {_short(value)} is not a number")
    return float(value)


def _named(row: dict[str, Any], op: Operation, where: str) -> list[Any]:
    """One instance given by name, in `op.inputs` order, as `sweep predict` takes one."""
    try:
        return arrange_named(op, row.items())
    except ConfigError as e:
        raise RequestError(400, f"{where}: {e}") from None


def _columns(given: dict[str, Any], op: Operation) -> npt.NDArray[np.float64]:
    """TF Serving's columnar ``{"inputs": {"n": [..], ...}}``: one list per input, all of one
    length (or one number per input: one instance)."""
    columns = _named(given, op, '"inputs"')
    if all(type(c) is not list for c in columns):
        return np.asarray([[_number(v, f'"inputs".{n}') for n, v in zip(
            op.inputs, columns, strict=True)]], dtype=np.float64)
    lengths = {name: len(c) if type(c) is list else None for name, c in zip(
        op.inputs, columns, strict=True)}
    if None in lengths.values() or len(set(lengths.values())) != 1 or not columns[0]:
        shown = ", ".join(f"{n}: {'not a list' if k is None else k}" for n, k in lengths.items())
        raise RequestError(400, f'"inputs": every input needs a non-empty list of numbers, all of '
                         f"one length ({shown[:200]})")
    _check_count(len(columns[0]))
    x = np.empty((len(columns[0]), op.arity), dtype=np.float64)
    for k, (name, column) in enumerate(zip(op.inputs, columns, strict=True)):
        x[:, k] = [_number(v, f'"inputs".{name}[{i}]') for i, v in enumerate(column)]
    return x


def _refuse_repeated_names(body: bytes) -> None:
    """JSON parsers keep the last of a repeated key (``{"n": 1, "n": 2}``); a name given twice
    is refused instead. Only for requests by name, whose structure is checked by now (shallow:
    objects of numbers or of lists of numbers), so Python's own parser reads it safely."""
    import json

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RequestError(400, f"{_shown(key)} is given twice; give each input once")
            seen.add(key)
        return dict(pairs)

    json.loads(body, object_pairs_hook=no_repeats)


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

    def error(e: RequestError) -> Response:
        return json_response(e.status, {"error": e.message}, e.headers)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, "Content-Length is not a number")
            if int(declared) > MAX_BODY_BYTES:
                raise RequestError(413, f"the body is {declared} bytes; the limit is "
                                 f"{MAX_BODY_BYTES} bytes")
        chunks: list[bytes] = []
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > MAX_BODY_BYTES:
                    raise RequestError(
                        413, f"the body exceeds the limit of {MAX_BODY_BYTES} bytes"
                    )
                chunks.append(chunk)
        except ClientDisconnect:
            # The client left, or the server cut off a slow body and answered it (408): this
            # answer goes nowhere, and it is no error of ours to log.
            raise RequestError(400, "the connection closed before the body arrived") from None
        return b"".join(chunks)

    def lookup(name: str, version: str | None) -> Served:
        if not store.is_known(name):
            raise RequestError(404, f"no operation {_shown(name)} is served here")
        served = store.served(name)
        if served is None:
            status = store.status(name)
            if status.state == "LOADING":
                raise RequestError(503, f"{name} is loading; try again shortly",
                                 {"Retry-After": "2"})
            raise RequestError(404, f"no model for {name!r} yet: {status.error}")
        if version is not None and version != str(served.entry.version):
            shown = version if version.isdigit() and len(version) <= _ECHO_CHARS else (
                _shown(version)
            )
            raise RequestError(
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
                    raise RequestError(404, f"unknown method {_shown(method)}; use :predict")
                if request.method != "POST":
                    raise RequestError(405, "use POST for :predict")
                served = lookup(name, version)
                asked = parse_request(await read_body(request), served.operation)
                y = served.predictor.predict(asked.x)
                body = {
                    "outputs" if asked.columnar else "predictions": y,
                    "model_version": served.entry.version,
                }
                if asked.answers:
                    body.update(_answers(asked.x, y, served.operation))
                return json_response(
                    200, body, {"X-Model-Version": str(served.entry.version)}
                )
            if request.method != "GET":
                raise RequestError(405, f"use GET for /v1/models/{name}")
            if not store.is_known(name):
                raise RequestError(404, f"no operation {_shown(name)} is served here")
            if request.path_params.get("metadata"):
                return json_response(200, model_metadata(lookup(name, version)))
            if version is not None:
                lookup(name, version)
            return json_response(200, model_status(store, name))
        except RequestError as e:
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

    async def metadata(request: Request) -> Response:
        request.path_params["metadata"] = True
        return await model(request)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/models/{target}", model, methods=["GET", "POST"]),
        Route("/v1/models/{target}/versions/{version}", model, methods=["GET", "POST"]),
        Route("/v1/models/{target}/metadata", metadata, methods=["GET"]),
        Route("/v1/models/{target}/versions/{version}/metadata", metadata, methods=["GET"]),
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

