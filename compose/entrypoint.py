"""The image's entry point: `sweep ARGS`, with `sweep worker` run under a restart policy.

    python /usr/local/lib/sweep-image/entrypoint.py worker --config /etc/sweep/sweep.toml
    python /usr/local/lib/sweep-image/entrypoint.py serve --host 0.0.0.0   # exec `sweep serve`

Any command but `worker` replaces this process with `sweep` (same PID, signals, exit code).
A worker is run as a child and its exit code decides what happens next, because neither
compose's nor Kubernetes' restart policies can tell one non-zero exit code from another:

- 0: every budget is met. Exit 0.
- 2 (a user or configuration error, `sweep`'s one-line refusals) is final: exit 2 at once,
  with no restart. One exception, checked here and not guessed from the message: if the
  database does not answer (`storage.check_reachable`, the same test `sweep` uses), the 2 was
  an outage, not a configuration error: wait for the database (up to WORKER_DATABASE_WAIT
  seconds, default 300), then start the worker again. A database that never answers (a wrong
  host or password) ends in exit 2 once the wait is over.
- 130, or this process got SIGTERM/SIGINT (forwarded to the worker, which fails its trial in
  flight cleanly): the worker was stopped on purpose. Exit with its code, no restart.
- anything else (a crash: 1 and a traceback, or a kill such as the kernel's OOM killer): start
  it again after 5, 10, 20, 40, 60, 60 ... s, at most WORKER_RESTARTS times in a row (default
  5); a run that lasted 10 minutes resets the count. Then exit with the last code (128 + N for
  a signal N).

So compose runs the workers with `restart: "no"`, and Kubernetes' Job with a podFailurePolicy
that fails the Job on exit code 2 (deploy/kubernetes/worker-job.yaml).

A CPU limit (cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`) that is below the cores the worker
sees sets SWEEP_WORKERS (and the BLAS thread variables) so TensorFlow uses that many threads, not
one per core of the whole node; a SWEEP_WORKERS that is already set is kept.

As PID 1 (Kubernetes runs no init) it also reaps every orphan that is handed to it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

EXIT_USAGE = 2  # sweep.cli.EXIT_USAGE: one-line refusals, configuration errors
EXIT_INTERRUPTED = 130  # sweep.cli.EXIT_INTERRUPTED: stopped by SIGTERM or Ctrl-C
DEFAULT_RESTARTS = 5
DEFAULT_DATABASE_WAIT = 300.0
DEFAULT_RESTART_DELAY = 5.0
MAX_RESTART_DELAY = 60.0
RESETS_AFTER_SECONDS = 600.0
DEFAULT_STORAGE = "sqlite:///sweeps.db"  # sweep.settings' default
NATIVE_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def say(message: str) -> None:
    print(f"sweep-entrypoint: {message}", file=sys.stderr, flush=True)


def _number(name: str, default: float, environ: Mapping[str, str]) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        say(f"{name}={text!r} is not a number of at least 0; using {default:g}")
        return default
    return value


# --- the storage URL and the database check ---------------------------------------------------


def storage_url(args: Sequence[str], environ: Mapping[str, str]) -> str:
    """The URL `sweep worker ARGS` uses: --storage, else $SWEEP_STORAGE, else the default."""
    url = None
    for index, word in enumerate(args):
        if word == "--storage" and index + 1 < len(args):
            url = args[index + 1]
        elif word.startswith("--storage="):
            url = word.partition("=")[2]
    if url is None:
        url = environ.get("SWEEP_STORAGE", "")
        url = url if url.strip() else DEFAULT_STORAGE
    return url


def database_answers(url: str) -> bool:
    """False only when the database cannot be reached; a malformed URL is not an outage."""
    from storage import StorageError, StorageUnavailable, check_reachable

    try:
        check_reachable(url)
    except StorageUnavailable:
        return False
    except StorageError:
        return True
    return True


# --- CPU limits -------------------------------------------------------------------------------


def cpu_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU quota in cores (cgroup v2, else v1), or None if it has none."""
    try:
        quota, period = [*(cgroup / "cpu.max").read_text().split(), "100000"][:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def thread_environment(
    environ: Mapping[str, str], cores: int, limit: float | None
) -> dict[str, str]:
    """The variables to add so a worker limited to `limit` cores of `cores` uses that many.

    `sweep` gives TensorFlow cores // SWEEP_WORKERS threads, counting every core it sees.
    """
    if limit is None or environ.get("SWEEP_WORKERS", "").strip():
        return {}
    threads = max(1, math.ceil(limit - 1e-9))
    if threads >= cores:
        return {}
    added = {"SWEEP_WORKERS": str(max(1, cores // threads))}
    added |= {name: str(threads) for name in NATIVE_THREAD_VARS if name not in environ}
    return added


# --- running the worker -----------------------------------------------------------------------


class Supervisor:
    """Runs `command` again and again, as the module docstring says."""

    def __init__(
        self,
        command: Sequence[str],
        environ: Mapping[str, str],
        *,
        database_answers: Callable[[str], bool] = database_answers,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command = list(command)
        self.environ = dict(environ)
        self.url = storage_url(self.command[1:], environ)
        self.database_answers = database_answers
        self.clock = clock
        self.restarts = int(_number("WORKER_RESTARTS", DEFAULT_RESTARTS, environ))
        self.database_wait = _number("WORKER_DATABASE_WAIT", DEFAULT_DATABASE_WAIT, environ)
        self.first_delay = _number("WORKER_RESTART_DELAY", DEFAULT_RESTART_DELAY, environ)
        self.stop_signal: int | None = None
        self.child: subprocess.Popen[bytes] | None = None

    # Signals: forwarded to the worker, and no restart after one.
    def on_signal(self, signum: int, frame: object) -> None:
        self.stop_signal = signum
        if self.child is not None and self.child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)

    def sleep(self, seconds: float) -> None:
        """Sleep, but return at once when a stop signal comes."""
        deadline = self.clock() + seconds
        while self.stop_signal is None and self.clock() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - self.clock())))

    def run_once(self) -> int:
        """Start the worker, reap children until it exits; its exit code (-N for signal N)."""
        self.child = subprocess.Popen(self.command, env=self.environ)
        if self.stop_signal is not None:  # came while it was starting
            self.child.send_signal(self.stop_signal)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)  # any child: orphans too, when we are PID 1
            except ChildProcessError:
                # Someone else reaped it (cannot happen here); fall back to its own wait.
                return self.child.wait()
            if pid == self.child.pid:
                code = os.waitstatus_to_exitcode(status)
                self.child.returncode = code
                return code

    def wait_for_database(self) -> bool:
        """True once the database answers; False when WORKER_DATABASE_WAIT runs out (or a stop)."""
        deadline = self.clock() + self.database_wait
        delay = 2.0
        say(f"the database does not answer; waiting up to {self.database_wait:g} s for it")
        while self.stop_signal is None:
            if self.database_answers(self.url):
                say("the database answers again; starting the worker")
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(min(delay, max(0.0, deadline - self.clock())))
            delay = min(delay * 2, 30.0)
        return False

    def run(self) -> int:
        crashes = 0
        while True:
            started = self.clock()
            code = self.run_once()
            if code == 0:
                return 0
            if self.stop_signal is not None or code == EXIT_INTERRUPTED:
                say(f"the worker was stopped (exit {_shown(code)}); not restarting it")
                return _exit_code(code)
            if code == EXIT_USAGE:
                if self.database_answers(self.url):
                    say("the worker refused to run (exit 2: a configuration error, see the "
                        "line above); not restarting it")
                    return EXIT_USAGE
                if not self.wait_for_database():
                    if self.stop_signal is not None:
                        return EXIT_INTERRUPTED
                    say(f"the database did not answer within {self.database_wait:g} s; giving "
                        "up (exit 2): check the storage URL, the host and the password")
                    return EXIT_USAGE
                continue  # an outage is not a crash: it does not count against the restarts
            if self.clock() - started >= RESETS_AFTER_SECONDS:
                crashes = 0
            crashes += 1
            if crashes > self.restarts:
                say(f"the worker failed (exit {_shown(code)}) {crashes} times in a row; "
                    "giving up")
                return _exit_code(code)
            delay = min(self.first_delay * 2 ** (crashes - 1), MAX_RESTART_DELAY)
            say(f"the worker failed (exit {_shown(code)}); restarting it in {delay:g} s "
                f"({crashes} of {self.restarts})")
            self.sleep(delay)
            if self.stop_signal is not None:
                return EXIT_INTERRUPTED


def _shown(code: int) -> str:
    if code < 0:
        try:
            return f"{128 - code}, killed by {signal.Signals(-code).name}"
        except ValueError:
            return str(128 - code)
    return str(code)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def sweep_program() -> str:
    """`sweep` on PATH, else the one installed beside this Python."""
    found = shutil.which("sweep") or str(Path(sys.executable).with_name("sweep"))
    if not os.access(found, os.X_OK):
        say("no `sweep` program on PATH or beside this Python")
        raise SystemExit(127)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv) or ["worker"]
    sweep = sweep_program()
    if args[0] != "worker" or any(word in ("-h", "--help") for word in args[1:]):
        os.execv(sweep, [sweep, *args])  # replaces this process: nothing below runs
    environ = dict(os.environ)
    added = thread_environment(environ, os.cpu_count() or 1, cpu_limit())
    if added:
        say("CPU limit: " + " ".join(f"{key}={value}" for key, value in sorted(added.items())))
        environ |= added
    supervisor = Supervisor([sweep, *args], environ)
    supervisor.install_signal_handlers()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
