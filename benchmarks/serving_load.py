"""Small requests while a large one is answered: `sweep serve` with predictions on worker threads
(and large bodies parsed in a worker process) against the same server predicting on its event
loop (``--threads 0``, the behaviour before 2026-12-07), side by side in one run.

One client sends one-pair requests back to back over a keep-alive connection, first alone (idle),
then while a second client (curl, its own process: the benchmark's GIL stays out of it) posts a
200,000-instance request again and again. Latencies are per small request; each setting is run
`rounds` times and the medians of the rounds' percentiles are reported. Target: under load, the
small requests' p99 at most 3x their idle p99.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._common import free_port, log, median

__all__ = [
    "BIG_INSTANCES", "TARGET_RATIO", "LoadedLatency", "loaded_target_line", "render_loaded",
    "run_under_load",
]

BIG_INSTANCES = 200_000
TARGET_RATIO = 3.0


@dataclass(frozen=True)
class LoadedLatency:
    threads: int  # `sweep serve --threads`: 0 predicts on the event loop
    rounds: int
    small_requests: int  # per round, idle and loaded each
    idle_p50_ms: float
    idle_p99_ms: float
    loaded_p50_ms: float
    loaded_p99_ms: float
    big_requests: int  # 200,000-instance requests answered while the small ones ran
    big_p50_ms: float

    @property
    def ratio(self) -> float:
        return self.loaded_p99_ms / self.idle_p99_ms


def _small(port: int, path: str, count: int) -> list[float]:
    body = json.dumps({"instances": [[123, 456]]}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"the service answered {response.status}")
            times.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    return times


def _big_loop(port: int, path: str, body_file: Path, times_file: Path) -> subprocess.Popen[bytes]:
    """curl posting the large body back to back, each request's seconds appended to a file."""
    script = (
        f'while :; do curl -s -o /dev/null -w "%{{http_code}} %{{time_total}}\\n" '
        f'-H "Content-Type: application/json" --data-binary @{body_file} '
        f'http://127.0.0.1:{port}{path} >> {times_file}; done'
    )
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def _one_setting(sweep: list[str], url: str, operation: str, threads: int, folder: Path,
                 rounds: int, count: int, env: dict[str, str]) -> LoadedLatency:
    port = free_port()
    server = subprocess.Popen(
        [*sweep, "serve", "--storage", url, "--port", str(port), "--threads", str(threads),
         operation],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    path = f"/v1/models/{operation}:predict"
    body_file = folder / "big.json"
    if not body_file.exists():
        x = np.random.default_rng(0).integers(0, 1000, (BIG_INSTANCES, 2))
        body_file.write_text(json.dumps({"instances": x.tolist()}))
    idle50: list[float] = []
    idle99: list[float] = []
    loaded50: list[float] = []
    loaded99: list[float] = []
    bigs: list[int] = []
    big_ms: list[float] = []
    try:
        _wait(port, server, path)
        _small(port, path, 200)  # warm-up
        for _ in range(rounds):
            idle = _small(port, path, count)
            times_file = folder / f"big-{threads}.txt"
            times_file.write_text("")
            big = _big_loop(port, path, body_file, times_file)
            try:
                time.sleep(1.0)  # the first large request is under way
                loaded = _small(port, path, count)
            finally:
                os.killpg(big.pid, signal.SIGTERM)
                big.wait()
            answered = [line.split() for line in times_file.read_text().splitlines()]
            seconds = [float(t) for code, t in answered if code == "200"]
            idle50.append(float(np.percentile(idle, 50)))
            idle99.append(float(np.percentile(idle, 99)))
            loaded50.append(float(np.percentile(loaded, 50)))
            loaded99.append(float(np.percentile(loaded, 99)))
            bigs.append(len(seconds))
            big_ms.extend(s * 1000 for s in seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result = LoadedLatency(threads, rounds, count, median(idle50), median(idle99),
                           median(loaded50), median(loaded99), int(median(bigs)),
                           median(big_ms) if big_ms else float("nan"))
    log(f"serving under load, --threads {threads}: idle p99 {result.idle_p99_ms:.2f} ms, "
        f"loaded p99 {result.loaded_p99_ms:.2f} ms ({result.ratio:.1f}x)")
    return result


def _wait(port: int, server: subprocess.Popen[bytes], path: str, within: float = 600) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sweep serve exited with {server.returncode}")
        try:
            _small(port, path, 1)
            return
        except (OSError, RuntimeError):
            time.sleep(0.3)
    raise RuntimeError(f"sweep serve was not ready within {within:g} s")


def run_under_load(sweep: list[str], url: str, operation: str, folder: Path, *, quick: bool,
                   env: dict[str, str]) -> list[LoadedLatency]:
    """Both settings, the event loop first (as before), then the worker threads (the default)."""
    rounds, count = (1, 300) if quick else (3, 2000)
    return [_one_setting(sweep, url, operation, threads, folder, rounds, count, env)
            for threads in (0, 2)]


def render_loaded(results: list[LoadedLatency]) -> list[str]:
    """The side-by-side table of section 7 and its verdict."""
    from benchmarks.tables import table

    if not results:
        return []
    names = {0: "on the event loop (`--threads 0`, as before)",
             2: "worker threads + a process for large bodies (`--threads 2`, the default)"}
    rows = [
        [names.get(r.threads, f"--threads {r.threads}"), str(r.rounds), f"{r.small_requests:,}",
         f"{r.idle_p50_ms:.2f} ms", f"{r.idle_p99_ms:.2f} ms", f"{r.loaded_p50_ms:.2f} ms",
         f"{r.loaded_p99_ms:.2f} ms", f"{r.ratio:.1f}x", str(r.big_requests),
         f"{r.big_p50_ms:.0f} ms"]
        for r in results
    ]
    return [
        "",
        f"Small requests (one pair, one keep-alive client) alone and while a {BIG_INSTANCES:,}-"
        "instance request is answered again and again (curl, its own process); medians over"
        " the rounds of each round's percentiles. Target: loaded p99 at most"
        f" {TARGET_RATIO:g}x idle p99.",
        "",
        *table(("predictions", "rounds", "small requests / round", "idle p50", "idle p99",
                "loaded p50", "loaded p99", "loaded / idle p99", "large requests / round",
                "large p50"), rows),
    ]


def loaded_target_line(results: list[LoadedLatency]) -> list[str]:
    """The target, judged on the default setting."""
    default = [r for r in results if r.threads == 2]
    if not default:
        return []
    r = default[0]
    state = "holds" if r.ratio <= TARGET_RATIO else "does not hold yet"
    return [f"- **`sweep serve`, small requests during a {BIG_INSTANCES:,}-instance request, p99"
            f" at most {TARGET_RATIO:g}x idle: {state}** ({r.loaded_p99_ms:.2f} ms against"
            f" {r.idle_p99_ms:.2f} ms idle, {r.ratio:.1f}x; section 7)."]
