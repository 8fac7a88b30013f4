"""`sweep serve`: the registry's best models over HTTP, in TF Serving's REST shape.

    POST /v1/models/OP:predict    {"instances": [[a, b], ...]} -> {"predictions": [...], ...}
    GET  /v1/models/OP            TF Serving's model status, plus version, sha256, metrics
    GET  /healthz                 200 once the first load finished, 503 before

uvicorn (httptools) runs a small Starlette app; answers come from one onnxruntime session per
operation, built from the registry's `.keras` by `python -m sweep.nets.exporting` in a
short-lived subprocess, so this process never loads TensorFlow (r17: 2-4 ms p50 with 8 clients;
any TensorFlow predictor costs 8-13 ms). The answers are exactly those of `sweep pull --format
onnx`. Without the `onnx` extra the models run in-process under TensorFlow instead.

A thread polls the registry (one small query, no model bytes) and loads a newly promoted best
next to the one serving; the swap is one reference assignment, so every request is answered
whole by one version, which it names (`model_version`, header `X-Model-Version`). Reads storage
only. Nothing from the storage URL reaches a response or a log line unmasked.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from storage import ChecksumMismatch, ModelEntry, ModelNotFound, ModelRegistry, StorageError
from sweep.errors import ConfigError, ServeError, SweepError, first_line
from sweep.nets.portable import ONNX_EXTRA, ONNX_MODULES, OnnxPredictor, missing_modules
from sweep.problem.operations import BUILTIN_OPERATIONS, Operation
from sweep.publishing.models import check_pairs, resolve_operation
from sweep.search.config import CampaignConfig

__all__ = [
    "BACKENDS",
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "MAX_INSTANCES",
    "SERVE_EXTRA",
    "ModelStore",
    "choose_backend",
    "create_app",
    "serve",
]

log = logging.getLogger("sweep.serve")

DEFAULT_PORT = 8500
# 8 MiB holds ~250,000 pairs of JSON numbers; more is refused (413) before it is read whole.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_INSTANCES = 200_000
POLL_SECONDS = 2.0
CONVERT_TIMEOUT = 600.0
BACKENDS = ("auto", "onnxruntime", "tensorflow")
SERVE_EXTRA = 'pip install "neural-arithmetic-sweep[serve]"'
SERVER_MODULES = ("uvicorn", "starlette", "orjson")
_EXACT_INTEGER = 2**53


class Predictor(Protocol):
    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class Served:
    """One operation's model as it answers: never mutated, replaced whole on promotion."""

    operation: Operation
    entry: ModelEntry
    predictor: Predictor
    backend: str
    seconds_to_load: float


@dataclass
class _Status:
    state: str = "LOADING"  # TF Serving's states: LOADING, AVAILABLE; "" while no model exists
    error: str = ""
    failed: tuple[int, str] | None = None  # the version that could not be loaded, and its sha


def choose_backend(requested: str) -> str:
    """``onnxruntime`` when the onnx extra is installed (or asked for), else ``tensorflow``."""
    if requested not in BACKENDS:
        raise ConfigError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    missing = missing_modules(ONNX_MODULES)
    if requested == "onnxruntime" and missing:
        raise ConfigError(
            f"--backend onnxruntime needs {', '.join(missing)}; install it with: {ONNX_EXTRA}"
        )
    if requested == "auto":
        return "tensorflow" if missing else "onnxruntime"
    return requested


class ModelStore:
    """The models being served, and the registry poll that replaces them with newer bests.

    `operations`: the names to serve, or None for every operation that has a best model (new
    ones are picked up when they are first promoted).
    """

    def __init__(
        self,
        url: str,
        campaign: str,
        operations: Sequence[str] | None,
        backend: str,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.url = url
        self.campaign = campaign
        self.backend = backend
        self.poll_seconds = poll_seconds
        self._wanted = None if operations is None else tuple(operations)
        self._served: dict[str, Served] = {}
        self._status: dict[str, _Status] = {}
        self._known: dict[str, Operation] = dict(BUILTIN_OPERATIONS)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self._registry_ok = True
        self._registry: ModelRegistry | None = None
        with ModelRegistry(url) as registry:
            stored = registry.load_campaign(campaign)
            if stored:
                for name in CampaignConfig.from_dict(stored).expressions:
                    self._known[name] = resolve_operation(registry, campaign, name)
            for name in self._wanted or ():
                self._known[name] = resolve_operation(registry, campaign, name)

    # --- reading (request threads) -------------------------------------------------------------

    def served(self, name: str) -> Served | None:
        return self._served.get(name)

    def is_known(self, name: str) -> bool:
        return name in self._known and (self._wanted is None or name in self._wanted)

    def status(self, name: str) -> _Status:
        return self._status.get(name) or _Status(state="", error="no model promoted yet")

    def versions(self) -> dict[str, int]:
        return {name: s.entry.version for name, s in sorted(self._served.items())}

    # --- the poll (one thread) -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sweep-serve-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._registry is not None:
            self._registry.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as e:  # the poll must never die: the service keeps serving
                log.warning("registry poll failed: %s", first_line(e))
            self.ready.set()
            self._stop.wait(self.poll_seconds)

    def _open_registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = ModelRegistry(self.url)
        return self._registry

    def refresh(self) -> None:
        """One poll: load every wanted operation whose best version is not the one served."""
        fetched: list[tuple[ModelEntry, bytes]] = []
        try:
            registry = self._open_registry()
            bests = {e.operation: e for e in registry.best_all(self.campaign)}
            for name in bests:
                if name not in self._known and self._wanted is None:
                    with contextlib.suppress(ConfigError):  # promoted before its campaign?
                        self._known[name] = resolve_operation(registry, self.campaign, name)
            for entry in [e for name, e in bests.items() if self._is_due(name, e)]:
                try:
                    fetched.append(
                        (entry, registry.fetch(entry.campaign, entry.operation, entry.version)[1])
                    )
                except (ChecksumMismatch, ModelNotFound) as e:
                    # This version is damaged (or went away): keep serving the one we have.
                    self._refuse(entry, first_line(e))
        except (StorageError, SweepError) as e:
            if self._registry is not None:
                self._registry.close()
                self._registry = None
            if self._registry_ok:
                versions = ", ".join(f"{k} v{v}" for k, v in self.versions().items()) or "none"
                log.warning(
                    "cannot read the registry (%s); still serving: %s", first_line(e), versions
                )
            self._registry_ok = False
            for name in self._wanted or ():
                self._status.setdefault(name, _Status(state="", error="registry unreachable"))
            return
        if not self._registry_ok:
            log.info("the registry answers again")
        self._registry_ok = True
        for name in self._wanted or ():
            if name not in bests and name not in self._served:
                self._status[name] = _Status(state="", error="no model promoted yet")
        if fetched:
            self._load(fetched)

    def _refuse(self, entry: ModelEntry, reason: str) -> None:
        """Record that `entry` cannot be served (not retried until a new version comes)."""
        name = entry.operation
        label = f"{name} version {entry.version}"
        self._status[name] = _Status(
            state="AVAILABLE" if name in self._served else "",
            error=f"{label} cannot be served: {reason}",
            failed=(entry.version, entry.sha256),
        )
        still = self._served.get(name)
        keeps = f"; still serving version {still.entry.version}" if still else ""
        log.warning("%s cannot be served: %s%s", label, reason, keeps)

    def _is_due(self, name: str, entry: ModelEntry) -> bool:
        if self._wanted is not None and name not in self._wanted:
            return False
        if name not in self._known:
            return False
        current = self._served.get(name)
        if current is not None and current.entry.version == entry.version:
            return False
        status = self._status.get(name)
        # A version that failed to load is not retried every poll; a new version is.
        return not (status and status.failed == (entry.version, entry.sha256))

    def _load(self, fetched: list[tuple[ModelEntry, bytes]]) -> None:
        for entry, _ in fetched:
            if entry.operation not in self._served:
                self._status[entry.operation] = _Status(state="LOADING")
        started = time.monotonic()
        if self.backend == "onnxruntime":
            results = self._convert(fetched)
        else:
            results = [self._load_tensorflow(entry, data) for entry, data in fetched]
        seconds = time.monotonic() - started
        for (entry, _), result in zip(fetched, results, strict=True):
            name = entry.operation
            label = f"{name} version {entry.version}"
            if isinstance(result, str):
                self._refuse(entry, result)
                continue
            served = Served(self._known[name], entry, result, self.backend, seconds)
            with self._lock:
                self._served = {**self._served, name: served}
            self._status[name] = _Status(state="AVAILABLE")
            log.info("serving %s (%s, loaded in %.1f s)", label, self.backend, seconds)

    def _convert(self, fetched: list[tuple[ModelEntry, bytes]]) -> list[Predictor | str]:
        """`.keras` -> ONNX for all of them in one TensorFlow start, in a child process."""
        from sweep.publishing.pulling import probe_inputs

        with tempfile.TemporaryDirectory(prefix="sweep-serve-") as folder:
            base = Path(folder)
            jobs = []
            for index, (entry, data) in enumerate(fetched):
                keras_path = base / f"{index}.keras"
                keras_path.write_bytes(data)
                op = self._known[entry.operation]
                probe_path = base / f"{index}.npy"
                np.save(probe_path, probe_inputs(op, self._data_spec()), allow_pickle=False)
                jobs.append(
                    {
                        "keras": str(keras_path),
                        "onnx": str(base / f"{index}.onnx"),
                        "probe": str(probe_path),
                        "integer_valued": op.integer_valued,
                        "label": f"{entry.operation} version {entry.version}",
                        "metadata": {
                            "operation": entry.operation,
                            "registry_version": str(entry.version),
                            "registry_sha256": entry.sha256,
                        },
                    }
                )
            import json

            results_path = base / "results.json"
            jobs_path = base / "jobs.json"
            jobs_path.write_text(json.dumps({"jobs": jobs, "results": str(results_path)}))
            error = self._run_converter(jobs_path)
            if error is not None:
                return [error] * len(fetched)
            results = json.loads(results_path.read_text())
            out: list[Predictor | str] = []
            for index, result in enumerate(results):
                if not result["ok"]:
                    out.append(str(result["error"]))
                    continue
                try:
                    out.append(OnnxPredictor((base / f"{index}.onnx").read_bytes()))
                except SweepError as e:
                    out.append(first_line(e))
            return out

    def _run_converter(self, jobs_path: Path) -> str | None:
        command = [sys.executable, "-m", "sweep.nets.exporting", str(jobs_path)]
        try:
            child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            return f"cannot start the ONNX converter: {e}"
        self._child = child
        try:
            _, stderr = child.communicate(timeout=CONVERT_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return f"the ONNX converter took more than {CONVERT_TIMEOUT:g} s"
        finally:
            self._child = None
        if child.returncode != 0:
            lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
            detail = lines[-1][:300] if lines else f"exit code {child.returncode}"
            return f"the ONNX converter failed: {detail}"
        return None

    def _load_tensorflow(self, entry: ModelEntry, data: bytes) -> Predictor | str:
        try:
            from sweep.nets.exporting import GraphPredictor
            from sweep.nets.saving import load_model_bytes

            model = load_model_bytes(data, label=f"{entry.operation} version {entry.version}")
            return GraphPredictor(model)
        except SweepError as e:
            return first_line(e)

    def _data_spec(self) -> Any:
        from sweep.problem.data import DataSpec

        stored = self._open_registry().load_campaign(self.campaign)
        return CampaignConfig.from_dict(stored).data if stored else DataSpec()


# --- HTTP --------------------------------------------------------------------------------------


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
        raise _HTTPError(400, f"unknown field {extra[0]!r}; expected only \"instances\"")
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


def _short(value: Any) -> str:
    import orjson

    text = orjson.dumps(value).decode(errors="replace") if _jsonable(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> bool:
    import orjson

    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


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
    from starlette.requests import Request
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
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise _HTTPError(413, f"the body exceeds the limit of {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def lookup(name: str, version: str | None) -> Served:
        if not store.is_known(name):
            raise _HTTPError(404, f"no operation {name!r} is served here")
        served = store.served(name)
        if served is None:
            status = store.status(name)
            if status.state == "LOADING":
                raise _HTTPError(503, f"{name} is loading; try again shortly",
                                 {"Retry-After": "2"})
            raise _HTTPError(404, f"no model for {name!r} yet: {status.error}")
        if version is not None and version != str(served.entry.version):
            raise _HTTPError(
                404, f"{name} version {version} is not served (version "
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
                    raise _HTTPError(404, f"unknown method {method!r}; use :predict")
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
                raise _HTTPError(404, f"no operation {name!r} is served here")
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
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: f"no such path {request.url.path!r}", 405: "method not allowed"}.get(
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
    handlers: dict[Any, Callable[..., Any]] = {404: not_found, 405: not_found}
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
