"""The image's HEALTHCHECK: is the `sweep` process in this container doing its job?

    python /usr/local/lib/sweep-image/healthcheck.py           # ready? (Docker, readiness)
    python /usr/local/lib/sweep-image/healthcheck.py --live    # alive? (liveness)

It finds the `sweep` process among this container's processes and checks according to its
command (Python's urllib: the image has no curl):

- `sweep serve`: on its --port (8500), GET /v2/health/ready: 200 once a requested operation
  has a model loaded (the versions served are then read from /healthz for the message; /healthz
  alone is 200 as soon as the first registry poll is done, with or without a model). --live:
  GET /v2/health/live.
- `sweep dashboard`: GET /api/studies on its --port (8080), which reads the database; --live:
  GET /api/meta, which does not.
- `sweep worker`: the worker process is running (a worker has no port; between two starts by
  the entry point there is none, and the check fails).

Exit 0 when healthy, 1 otherwise, with one line saying why. `--pid N` checks process N instead
of looking for one (for tests, and for a container that runs other processes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROLES = ("serve", "dashboard", "worker")
DEFAULT_PORTS = {"serve": 8500, "dashboard": 8080}
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]", "localhost"}
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class SweepProcess:
    pid: int
    role: str
    args: tuple[str, ...]  # the words after the role

    def option(self, name: str) -> str | None:
        value = None
        for index, word in enumerate(self.args):
            if word == name and index + 1 < len(self.args):
                value = self.args[index + 1]
            elif word.startswith(name + "="):
                value = word.partition("=")[2]
        return value


def parse_command_line(pid: int, argv: list[str]) -> SweepProcess | None:
    """The sweep command in `argv` (`sweep serve ...`, `python -m sweep serve ...`), if any."""
    for index, word in enumerate(argv[:-1]):
        if os.path.basename(word) == "sweep" and argv[index + 1] in ROLES:
            return SweepProcess(pid, argv[index + 1], tuple(argv[index + 2 :]))
    return None


def read_process(proc: Path, pid: int) -> SweepProcess | None:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
        state = (proc / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None
    if state in ("Z", "X"):  # a zombie or a dead process is not running
        return None
    argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    return parse_command_line(pid, argv)


def find_sweep_process(proc: Path = Path("/proc")) -> SweepProcess | None:
    """The first running `sweep serve|dashboard|worker` in this (container's) PID namespace."""
    pids = sorted(int(entry.name) for entry in proc.iterdir() if entry.name.isdigit())
    for pid in pids:
        found = read_process(proc, pid)
        if found is not None:
            return found
    return None


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def base_url(process: SweepProcess) -> str:
    host = process.option("--host") or "127.0.0.1"
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = process.option("--port") or str(DEFAULT_PORTS[process.role])
    return f"http://{host}:{port}"


def check(process: SweepProcess, *, live: bool) -> tuple[bool, str]:
    """(healthy, why) for `process`."""
    if process.role == "worker":
        return True, f"sweep worker (pid {process.pid}) is running"
    if process.role == "dashboard":
        url = base_url(process) + ("/api/meta" if live else "/api/studies")
        try:
            status, _ = _get(url)
        except (OSError, ValueError) as e:
            return False, f"{url}: {e}"
        return status == 200, f"{url}: {status}"
    base = base_url(process)
    url = base + ("/v2/health/live" if live else "/v2/health/ready")
    try:
        status, _ = _get(url)
    except (OSError, ValueError) as e:
        return False, f"{url}: {e}"
    if live or status != 200:
        why = "" if status == 200 else " (no model loaded yet)"
        return status == 200, f"{url}: {status}{why}"
    try:
        _, body = _get(base + "/healthz")
        models = json.loads(body).get("models") or {}
    except (OSError, ValueError, AttributeError):
        models = {}
    return True, f"{url}: serving " + ", ".join(f"{k} v{v}" for k, v in sorted(models.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="alive, not necessarily ready")
    parser.add_argument("--pid", type=int, help="check this process instead of finding one")
    args = parser.parse_args(argv)
    if args.pid is not None:
        process = read_process(Path("/proc"), args.pid)
        if process is None:
            print(f"unhealthy: process {args.pid} is not a running sweep serve, dashboard or "
                  "worker")
            return 1
    else:
        process = find_sweep_process()
        if process is None:
            print("unhealthy: no sweep serve, dashboard or worker process is running")
            return 1
    healthy, why = check(process, live=args.live)
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
