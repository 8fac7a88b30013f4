"""The prediction service: `sweep serve` latency against `sweep predict` and in-process exports.

A 2-16-8-1 tanh model (signed-log normalisation, random weights: the cost, not the quality,
is measured) is promoted into a fresh SQLite registry; `sweep serve` runs as a real
subprocess. Clients send one pair or 10,000 pairs per request, with 1 and 8 concurrent
keep-alive connections: Python threads (http.client) always, and wrk (a C load generator,
much lighter on the shared cores) when it is installed. Latency percentiles are over every
request after a warm-up; pairs per second is pairs answered over the wall time. In-process, the
same model's ONNX export under onnxruntime, its SavedModel's signature and the Keras model are
timed per call at the same batch sizes; `sweep predict` is timed as a whole command.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks._common import free_port, log, median
from benchmarks.serving_load import (
    LoadedLatency,
    loaded_target_line,
    render_loaded,
    run_under_load,
)
from benchmarks.tables import table

__all__ = [
    "InProcessResult", "ServeLatency", "ServingResult", "render_section", "run_serving",
    "target_lines",
]

OPERATION = "multiply"
ARCHITECTURE = "2-16-8-1 tanh"
BIG = 10_000
ONE_PAIR_TARGET_MS = 5.0  # p50, 8 concurrent clients
BIG_TARGET_MS = 50.0  # p50 of a 10,000-pair request


@dataclass(frozen=True)
class ServeLatency:
    client: str  # "python" or "wrk"
    clients: int
    pairs: int  # per request
    requests: int
    p50_ms: float
    p99_ms: float
    pairs_per_second: float


@dataclass(frozen=True)
class InProcessResult:
    predictor: str
    pairs: int
    calls: int
    p50_ms: float
    p99_ms: float


@dataclass
class ServingResult:
    backend: str = ""
    ready_seconds: float = math.nan  # start to /healthz 200 (includes the ONNX conversion)
    rss_mib: float = math.nan
    predict_seconds: float = math.nan  # one `sweep predict` command, median
    predict_runs: int = 0
    serve: list[ServeLatency] = field(default_factory=list)
    in_process: list[InProcessResult] = field(default_factory=list)
    loaded: list[LoadedLatency] = field(default_factory=list)

    def latency(self, client: str, clients: int, pairs: int) -> ServeLatency | None:
        return next(
            (s for s in self.serve
             if (s.client, s.clients, s.pairs) == (client, clients, pairs)), None
        )


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _seed(url: str) -> None:
    import keras

    from storage import ModelCandidate, ModelRegistry
    from sweep.nets.normalization import fit_normalization
    from sweep.nets.saving import serialize_model
    from sweep.nets.spec import ModelSpec
    from sweep.nets.training import build

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).integers(0, 500, (1000, 2)).astype("float64")
    spec = ModelSpec((16, 8), "tanh", "log", "log", 1e-3, 32, "mse", 1, "constant", False)
    model = build(
        spec, 2, fit_normalization("log", x),
        fit_normalization("log", (x[:, 0] * x[:, 1]).reshape(-1, 1)),
    ).exported
    with ModelRegistry(url) as registry:
        registry.promote_if_better(
            ModelCandidate(
                campaign="arith", operation=OPERATION, study_name=f"arith.{OPERATION}",
                trial_number=0, objective_value=1.0, metrics={},
                params={"architecture": ARCHITECTURE}, model_bytes=serialize_model(model),
                keras_version=keras.__version__, tensorflow_version="2",
            )
        )




def _sweep() -> list[str]:
    script = Path(sys.executable).with_name("sweep")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sweep"]


def _body(pairs: int, seed: int) -> bytes:
    x = np.random.default_rng(seed).integers(0, 1000, (pairs, 2))
    return json.dumps({"instances": x.tolist()}).encode()


def _python_clients(port: int, clients: int, pairs: int, requests: int, warmup: int
                    ) -> ServeLatency:
    path = f"/v1/models/{OPERATION}:predict"
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def client(index: int) -> None:
        body = _body(pairs, index)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for number in range(warmup + requests):
            started = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failures.append(str(response.status))
            if number >= warmup:
                mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"the service answered {failures[0]} during the benchmark")
    total = clients * (warmup + requests) * pairs
    ms = [v * 1000 for v in latencies]
    return ServeLatency("python", clients, pairs, len(ms), _percentile(ms, 50),
                        _percentile(ms, 99), total / wall)


def _wrk(wrk: str, port: int, clients: int, pairs: int, seconds: float, folder: Path
         ) -> ServeLatency:
    script = folder / f"post-{pairs}.lua"
    body = _body(pairs, 0).decode()
    script.write_text(
        'wrk.method = "POST"\nwrk.body = [==[' + body + ']==]\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    url = f"http://127.0.0.1:{port}/v1/models/{OPERATION}:predict"
    base = [wrk, "-t1", f"-c{clients}", "-s", str(script)]
    subprocess.run([*base, "-d1s", url], capture_output=True, timeout=60, check=True)  # warm-up
    done = subprocess.run([*base, f"-d{seconds:g}s", "--latency", url], capture_output=True,
                          text=True, timeout=seconds + 60, check=True)
    out = done.stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors: {out}")

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return math.nan
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    return ServeLatency("wrk", clients, pairs, requests, ms("50"), ms("99"), rate * pairs)


def _in_process(onnx_bytes: bytes, savedmodel: Path, model: object, calls: int
                ) -> list[InProcessResult]:
    import tensorflow as tf

    from sweep.nets.portable import OnnxPredictor
    from sweep.nets.training import predict

    session = OnnxPredictor(onnx_bytes)
    signature = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]

    def saved(x: np.ndarray) -> np.ndarray:
        return np.asarray(signature(operands=tf.constant(x))["result"])

    def eager(x: np.ndarray) -> np.ndarray:
        return predict(model, x)

    predictors: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "onnxruntime (the ONNX export; 1 thread)": session.predict,
        "SavedModel signature (tf.saved_model.load)": saved,
        "Keras model, eager call (reference)": eager,
    }
    results = []
    for name, run in predictors.items():
        for pairs in (1, BIG):
            x = np.random.default_rng(pairs).integers(0, 1000, (pairs, 2)).astype(np.float64)
            for _ in range(3):
                run(x)
            n = calls if pairs == 1 else max(5, calls // 20)
            times = []
            for _ in range(n):
                started = time.perf_counter()
                run(x)
                times.append((time.perf_counter() - started) * 1000)
            results.append(InProcessResult(name, pairs, n, _percentile(times, 50),
                                           _percentile(times, 99)))
    return results


def run_serving(workdir: Path, *, quick: bool) -> ServingResult:
    """Start `sweep serve` on a fresh registry and measure it, then the in-process predictors."""
    folder = Path(tempfile.mkdtemp(prefix="serving-", dir=workdir))
    url = f"sqlite:///{folder / 'serving.db'}"
    _seed(url)
    result = ServingResult()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}

    runs = 1 if quick else 3
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*_sweep(), "predict", OPERATION, "123", "456", "--storage", url],
                       env=env, capture_output=True, check=True, timeout=300)
        timings.append(time.perf_counter() - started)
    result.predict_seconds, result.predict_runs = median(timings), runs
    log(f"serving: sweep predict {result.predict_seconds:.1f} s per call")

    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [*_sweep(), "serve", "--storage", url, "--port", str(port), OPERATION],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port, server)
        result.ready_seconds = time.perf_counter() - started
        status = json.loads(_get(port, f"/v1/models/{OPERATION}"))
        result.backend = str(status.get("backend", ""))
        wrk = shutil.which("wrk")
        settings = [(1, 1), (8, 1), (1, BIG), (8, BIG)]
        for clients, pairs in settings:
            if pairs == 1:
                requests = (50 if quick else 400) if clients == 1 else (25 if quick else 150)
            else:
                requests = (3 if quick else 30) if clients == 1 else (2 if quick else 6)
            result.serve.append(_python_clients(port, clients, pairs, requests, warmup=3))
            log(f"serving: python, {clients} client(s), {pairs} pair(s): "
                f"p50 {result.serve[-1].p50_ms:.2f} ms")
            if wrk is not None:
                seconds = 2 if quick else 10
                result.serve.append(_wrk(wrk, port, clients, pairs, seconds, folder))
                log(f"serving: wrk, {clients} client(s), {pairs} pair(s): "
                    f"p50 {result.serve[-1].p50_ms:.2f} ms")
        result.rss_mib = _rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    result.loaded = run_under_load(_sweep(), url, OPERATION, folder, quick=quick, env=env)

    from storage import Database
    from sweep.nets.exporting import export_onnx, export_savedmodel
    from sweep.publishing.models import load_best_model

    with Database(url) as database:
        model = load_best_model(OPERATION, database=database)
    onnx_bytes, _ = export_onnx(model)
    export_savedmodel(model, folder / "savedmodel" / "1")
    result.in_process = _in_process(onnx_bytes, folder / "savedmodel" / "1", model,
                                    100 if quick else 1000)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _get(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise ConnectionError(f"{response.status} {body}")
        return body
    finally:
        connection.close()


def _wait_ready(port: int, server: subprocess.Popen[bytes], within: float = 600) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sweep serve exited with {server.returncode}")
        try:
            _get(port, "/healthz")
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"sweep serve was not ready within {within:g} s")


def _rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return math.nan
    line = next((line for line in status.splitlines() if line.startswith("VmRSS")), None)
    return int(line.split()[1]) / 1024 if line else math.nan


# --- the report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def render_section(serving: ServingResult | None) -> list[str]:
    """Section 7 of BENCHMARKS.md: latency per client setting, the command, in-process calls."""
    if serving is None:
        return []
    rows = [
        [f"`sweep serve` ({s.client} client)", str(s.clients), f"{s.pairs:,}", str(s.requests),
         _ms(s.p50_ms), _ms(s.p99_ms), f"{s.pairs_per_second:,.0f}"]
        for s in serving.serve
    ]
    rows.append(
        ["`sweep predict OP A B` (a whole command)", "1", "1", str(serving.predict_runs),
         _ms(serving.predict_seconds * 1000), "—", f"{1 / serving.predict_seconds:.2f}"]
    )
    rows += [
        [f"in-process: {r.predictor}", "1", f"{r.pairs:,}", str(r.calls), _ms(r.p50_ms),
         _ms(r.p99_ms), f"{r.pairs / (r.p50_ms / 1000):,.0f}"]
        for r in serving.in_process
    ]
    lines = [
        "## 7. Prediction service",
        "",
        f"One {ARCHITECTURE} model (float64, signed-log normalisation) in a SQLite registry;"
        f" `sweep serve` as a subprocess ({serving.backend} backend: ready"
        f" {serving.ready_seconds:.1f} s after start, the .keras -> ONNX conversion included;"
        f" {serving.rss_mib:.0f} MiB resident while serving). Keep-alive clients on the same two"
        " cores as the server: Python threads (http.client, which itself eats most of a core)"
        " and wrk. Latency per request; pairs per second over the wall time (for in-process"
        " rows: pairs over the median call). Targets: one pair under 5 ms p50 with 8 clients,"
        " a 10,000-pair request under 50 ms.",
        "",
        *table(
            ("predictor", "clients", "pairs / request", "requests", "p50", "p99", "pairs / s"),
            rows,
        ),
        *render_loaded(serving.loaded),
    ]
    return lines


def target_lines(serving: ServingResult | None) -> list[str]:
    """The two latency targets, judged on the lightest client measured (wrk when installed)."""
    if serving is None:
        return []
    lines = []
    for clients, pairs, target, what in (
        (8, 1, ONE_PAIR_TARGET_MS, "one pair per request, 8 concurrent clients"),
        (1, 10_000, BIG_TARGET_MS, "a 10,000-pair request"),
    ):
        measured = [
            s for s in (serving.latency(c, clients, pairs) for c in ("wrk", "python"))
            if s is not None
        ]
        if not measured:
            continue
        best = measured[0]
        state = "holds" if best.p50_ms < target else "does not hold yet"
        others = "; ".join(f"{s.client} client p50 {_ms(s.p50_ms)}" for s in measured)
        lines.append(
            f"- **`sweep serve`, {what}, p50 under {target:g} ms: {state}** ({others};"
            " section 7)."
        )
    return lines + loaded_target_line(serving.loaded)
