"""`sweep serve`'s Prometheus metrics (GET /metrics) and its optional access log.

    sweep_serve_requests_total{operation, route, status}   requests answered
    sweep_serve_request_duration_seconds{operation, route}  latency, first byte in to last out
    sweep_serve_requests_in_flight                          requests being answered now
    sweep_serve_model_version{operation}                    the registry version each serves
    sweep_serve_model_loads_total{operation}                versions loaded (swapped in)
    sweep_serve_model_load_failures_total{operation}        versions that could not be served

Labels stay few whatever clients send: `route` is the route's template (``/v2/models/{op}/infer``;
``other`` for paths the service does not have) and `operation` is empty unless the operation is
served here. One registry per app (never prometheus_client's global one), so two apps in one
process count apart. The access log is one line per request on the ``sweep.serve.access``
logger: client, method, path (cut to 200 characters), status, milliseconds; never a body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sweep.publishing.model_store import ModelStore
from sweep.publishing.serve_http import OPERATION_KEY, ROUTE_KEY, label

__all__ = ["ServeMetrics"]

access_log = logging.getLogger("sweep.serve.access")

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PATH_CHARS = 200


class _StoreCollector:
    """What the model store holds, read at each scrape: versions served, loads, failures."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        version = GaugeMetricFamily("sweep_serve_model_version",
                                    "The registry version each operation serves",
                                    labels=["operation"])
        for name, number in self.store.versions().items():
            version.add_metric([name], number)
        loads = CounterMetricFamily("sweep_serve_model_loads",
                                    "Model versions loaded and swapped in", labels=["operation"])
        failures = CounterMetricFamily("sweep_serve_model_load_failures",
                                       "Model versions that could not be served",
                                       labels=["operation"])
        for name, count in sorted(self.store.loads.items()):
            loads.add_metric([name], count)
        for name, count in sorted(self.store.failed_loads.items()):
            failures.add_metric([name], count)
        yield from (version, loads, failures)


class ServeMetrics:
    """The app's metrics registry, the middleware that counts every request, /metrics."""

    def __init__(self, store: ModelStore, *, log_requests: bool = False) -> None:
        self.store = store
        self.log_requests = log_requests
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sweep_serve_requests", "Requests answered, by operation, route and status",
            ["operation", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "sweep_serve_request_duration_seconds", "Time to answer a request",
            ["operation", "route"], buckets=_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("sweep_serve_requests_in_flight", "Requests being answered",
                               registry=self.registry)
        self.registry.register(_StoreCollector(store))

    async def endpoint(self, request: Request) -> Response:
        label(request, "/metrics", self.store)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500  # if the app ends without an answer

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            self.in_flight.inc()
            try:
                await app(scope, receive, sending)
            finally:
                self.in_flight.dec()
                seconds = time.perf_counter() - started
                route = scope.get(ROUTE_KEY, "other")
                operation = scope.get(OPERATION_KEY, "")
                self.requests.labels(operation, route, str(status)).inc()
                self.latency.labels(operation, route).observe(seconds)
                if self.log_requests:
                    _log_request(scope, status, seconds)

        return counted


def _log_request(scope: Scope, status: int, seconds: float) -> None:
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else "-"
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    path = raw.decode("ascii", "backslashreplace")
    if len(path) > _PATH_CHARS:
        path = path[: _PATH_CHARS - 3] + "..."
    access_log.info('%s "%s %s" %d %.1f ms', who, scope.get("method", "-"), path, status,
                    seconds * 1000)
