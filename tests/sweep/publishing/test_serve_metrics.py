"""`sweep serve --access-log` as a real subprocess, its /metrics scraped with Prometheus's own
parser: requests by operation, route and status, latency histograms, in-flight requests, the
version each operation serves, loads and failed loads; one access line per request, no body."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy
from _hand_models import exact_add, exact_multiply, promote
from _serving import Server, start_server, wait_for_version
from prometheus_client import parser

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("metrics")
    url = f"sqlite:///{folder / 'sweeps.db'}"
    promote(url, "add", exact_add(bias=0.25), 1.0)
    promote(url, "multiply", exact_multiply(), 0.0)
    running = start_server(url, folder, "--poll", "0.5", "--access-log")
    yield running
    assert running.stop() == 0, running.logged()


def _scrape(server: Server) -> Samples:
    response = httpx.get(f"{server.base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in parser.text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_operation_route_and_status(server: Server) -> None:
    before = _scrape(server)
    base = server.base
    for _ in range(3):
        httpx.post(f"{base}/v1/models/add:predict", json={"instances": [[1, 2]]})
    httpx.post(f"{base}/v1/models/add:predict", json={"instances": [[1, "x"]]})
    httpx.post(f"{base}/v2/models/multiply/infer", json={"inputs": [
        {"name": "operands", "shape": [1, 2], "datatype": "FP64", "data": [2, 3]}]})
    for path in ("/v1/models/someone-elses-name:predict", "/not/a/route/x1", "/not/a/route/x2"):
        httpx.post(f"{base}{path}", json={})
    after = _scrape(server)

    def grew(route: str, status: str, operation: str = "") -> float:
        labels = {"operation": operation, "route": route, "status": status}
        return (_value(after, "sweep_serve_requests_total", **labels)
                - _value(before, "sweep_serve_requests_total", **labels))

    assert grew("/v1/models/{op}:predict", "200", "add") == 3
    assert grew("/v1/models/{op}:predict", "400", "add") == 1
    assert grew("/v2/models/{op}/infer", "200", "multiply") == 1
    # Names and paths nobody serves add no label values: one series each, whatever was asked.
    assert grew("/v1/models/{op}:predict", "404") == 1
    assert grew("other", "404") == 2
    operations = {dict(labels).get("operation") for (_, labels) in after}
    assert operations <= {None, "", "add", "multiply"}
    histogram = {"operation": "add", "route": "/v1/models/{op}:predict"}
    count = _value(after, "sweep_serve_request_duration_seconds_count", **histogram)
    assert count >= 4
    assert _value(after, "sweep_serve_request_duration_seconds_bucket", le="+Inf",
                  **histogram) == count
    assert _value(after, "sweep_serve_requests_in_flight") == 1  # the scrape itself


def test_versions_loads_and_failed_loads_are_exposed(server: Server) -> None:
    samples = _scrape(server)
    assert _value(samples, "sweep_serve_model_version", operation="add") == 1
    assert _value(samples, "sweep_serve_model_loads_total", operation="multiply") == 1
    promote(server.url, "add", exact_add(), 0.5)  # version 2, then damaged in the database
    engine = sqlalchemy.create_engine(server.url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(
            "UPDATE sweep_model_versions SET model_bytes = :b WHERE version = 2 AND "
            "operation = 'add'"), {"b": b"PK\x03\x04 flipped"})
    engine.dispose()
    deadline = time.monotonic() + 120
    while _value(_scrape(server), "sweep_serve_model_load_failures_total", operation="add") < 1:
        assert time.monotonic() < deadline, server.logged()
        time.sleep(0.3)
    promote(server.url, "add", exact_add(), 0.25)  # version 3 loads
    wait_for_version(server, "add", 3)
    samples = _scrape(server)
    assert _value(samples, "sweep_serve_model_version", operation="add") == 3
    assert _value(samples, "sweep_serve_model_loads_total", operation="add") == 2
    assert _value(samples, "sweep_serve_model_load_failures_total", operation="add") == 1


def test_the_access_log_has_one_line_per_request_and_no_body(server: Server) -> None:
    secret = "body-secret-4412"
    httpx.post(f"{server.base}/v1/models/add:predict?token=query-secret",
               content=b'{"instances": [[1, 2]], "x": "' + secret.encode() + b'"}')
    deadline = time.monotonic() + 10
    while '"POST /v1/models/add:predict" 400' not in server.logged():
        assert time.monotonic() < deadline, server.logged()
        time.sleep(0.1)
    lines = [line for line in server.logged().splitlines() if "/v1/models/add:predict" in line]
    assert lines and all(line.startswith("sweep serve: 127.0.0.1:") for line in lines)
    assert " ms" in lines[-1]
    assert secret not in server.logged() and "query-secret" not in server.logged()
