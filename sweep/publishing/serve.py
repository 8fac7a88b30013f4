"""`sweep serve`: the registry's best models over HTTP, in TF Serving's REST shape and KServe
v2's (the Open Inference Protocol), with Prometheus metrics.

    /v1/models/OP[/versions/N][:predict|/metadata]    TF Serving's REST API (`serve_tfserving`)
    /v2/..., /v2/models/OP[/versions/V][/ready|/infer] KServe v2 (`serve_kserve`)
    GET /metrics                                       Prometheus (`serve_metrics`)
    GET /v2/health/live                                200 while the process answers
    GET /v2/health/ready                               200 once a requested operation has a model
    GET /healthz                                       200 once the first registry poll is done
                                                       (with or without a model), 503 before; its
                                                       body lists the versions served

Predictions are the network's raw outputs, TF Serving's shape exactly. With ``"answers": true``
in a TF Serving request, the response adds per instance `answers` (rounded only where the
operation is integer-valued and every input of the row is a whole number, as `sweep predict`
rounds), `rounded`, and `beyond_2_53` (the answer's magnitude is past 2**53, where float64 no
longer holds every whole number).

uvicorn (httptools) runs a small Starlette app over a `ModelStore` (`model_store`), which
holds one predictor per operation and swaps in newer bests while this serves; by default those
are onnxruntime sessions converted in a child process (`model_backends`), so this process never
loads TensorFlow. Predictions run on a thread pool and large bodies are parsed in a worker
process (`serve_workers`), so a 200,000-instance request does not stall the small ones. The
answers are exactly those of `sweep pull --format onnx`. Every response names the version that
answered it (`model_version`, header `X-Model-Version`). Reads storage only. Nothing from the
storage URL reaches a response or a log line unmasked.

Every input is bounded before it costs memory or time: the request head (URL, header fields and
their bytes, the seconds to send them) and the body's seconds by `http_limits`, under the app,
where uvicorn and httptools bound nothing; the body's bytes as the app reads it; the document's
nesting by orjson (under 1,024 levels), its instances by `serve_requests` and `serve_tensors`.
Each refusal is one JSON line with a 4xx status, and values echoed back are cut to about 40
characters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from sweep.errors import ConfigError, ServeError
from sweep.nets.portable import missing_modules
from sweep.publishing.http_limits import MAX_BODY_BYTES, guarded_protocol
from sweep.publishing.model_backends import BACKENDS, choose_backend
from sweep.publishing.model_store import ModelStore
from sweep.publishing.serve_requests import (
    MAX_INSTANCES,
    ParsedRequest,
    RequestError,
    parse_instances,
    parse_request,
    quoted,
)
from sweep.publishing.serve_workers import DEFAULT_THREADS, Workers

__all__ = [
    "BACKENDS",
    "DEFAULT_PORT",
    "DEFAULT_THREADS",
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
SERVE_EXTRA = 'pip install "neural-arithmetic-sweep[serve]"'
SERVER_MODULES = ("uvicorn", "httptools", "starlette", "orjson", "prometheus_client")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("neural-arithmetic-sweep")
    except metadata.PackageNotFoundError:
        return "unknown"


def create_app(
    store: ModelStore, *, threads: int = DEFAULT_THREADS, access_log: bool = False
) -> Any:
    """The Starlette app over `store` (which the app starts and stops with its lifespan).

    `threads`: the worker threads that predict off the event loop (0: on it, as before);
    `access_log`: one line per request on the ``sweep.serve.access`` logger.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from sweep.publishing.serve_http import json_response, label
    from sweep.publishing.serve_kserve import kserve_routes
    from sweep.publishing.serve_metrics import ServeMetrics
    from sweep.publishing.serve_tfserving import tfserving_routes

    workers = Workers(threads)
    metrics = ServeMetrics(store, log_requests=access_log)

    async def healthz(request: Request) -> Response:
        label(request, "/healthz", store)
        if not store.ready.is_set():
            return json_response(503, {"status": "loading"}, {"Retry-After": "2"})
        return json_response(200, {"status": "ok", "models": store.versions()})

    async def not_found(request: Request, exc: Exception) -> Response:
        # Also the answer to a bug (500): JSON like every other, though Starlette still hands
        # the exception on to uvicorn's log, where a bug belongs.
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: f"no such path {quoted(request.url.path)}", 405: "method not allowed"}.get(
            status, "internal error"
        )
        return json_response(status, {"error": message})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        workers.start()
        store.start()
        try:
            yield
        finally:
            store.stop()
            workers.stop()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        *tfserving_routes(store, workers),
        *kserve_routes(store, workers, _version()),
    ]
    handlers: dict[Any, Callable[..., Any]] = {404: not_found, 405: not_found, 500: not_found}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    return metrics.middleware(app)


def serve(
    store: ModelStore,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    on_listening: Callable[[str], None] | None = None,
    threads: int = DEFAULT_THREADS,
    access_log: bool = False,
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
        create_app(store, threads=threads, access_log=access_log),
        http=guarded_protocol(),
        ws="none",  # no WebSocket route: an Upgrade is never handed to a WebSocket library
        log_level="warning",
        access_log=False,  # ours (`serve_metrics`), when asked: uvicorn's cannot be bounded
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    if on_listening is not None:
        on_listening(f"http://{shown}:{bound}")
    server.run(sockets=[sock])

