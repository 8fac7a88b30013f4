"""`sweep serve` as a real subprocess on a free port, for the service's tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sweep_command() -> list[str]:
    script = Path(sys.executable).with_name("sweep")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sweep"]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    url: str

    def logged(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (what `docker stop` sends); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_server(url: str, folder: Path, *args: str, ready_within: float = 300) -> Server:
    """Start `sweep serve --storage URL ARGS` and wait until /healthz answers 200."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    handle = log.open("wb")
    process = subprocess.Popen(
        [*sweep_command(), "serve", "--storage", url, "--port", str(port), *args],
        cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
    )
    handle.close()
    server = Server(process, f"http://127.0.0.1:{port}", log, url)
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sweep serve exited with {process.returncode}:\n{server.logged()}")
        try:
            if httpx.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    pytest.fail(f"sweep serve was not ready within {ready_within} s:\n{server.logged()}")


def wait_for_version(
    server: Server, operation: str, version: int, within: float = 300
) -> dict[str, object]:
    """Poll GET /v1/models/OP until it serves `version`; its status."""
    deadline = time.monotonic() + within
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.base}/v1/models/{operation}", timeout=5).json()
        if status.get("model_version") == version:
            return status
        time.sleep(0.3)
    pytest.fail(f"{operation} version {version} was not served within {within} s: {status}\n"
                f"{server.logged()}")
