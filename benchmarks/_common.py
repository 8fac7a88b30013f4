"""Shared helpers: the machine's description, load, medians, throwaway PostgreSQL databases."""

from __future__ import annotations

import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# The house target several sections judge by: under 5% of wall time outside training.
OVERHEAD_TARGET = 0.05


def log(message: str) -> None:
    """Progress on stderr, so a long run can be followed while stdout stays clean."""
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    """Median of the finite values; NaN when there are none (a failed run is not a zero)."""
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def load_average() -> str:
    """The 1/5/15-minute load: the machine is shared, so every section records it."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(postgres_version: str | None) -> dict[str, str]:
    """What a reader needs to compare these figures with theirs."""
    return {
        "cores (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "memory": _memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "TensorFlow": _version("tensorflow"),
        "Keras": _version("keras"),
        "Optuna": _version("optuna"),
        "KerasTuner": _version("keras-tuner"),
        "SQLAlchemy": _version("sqlalchemy"),
        "NumPy": _version("numpy"),
        "PostgreSQL server": postgres_version or "not reachable",
    }


def _admin_engine(admin_url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        admin_url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE cannot run in a transaction
        connect_args={"connect_timeout": 5},
    )


def postgres_version(admin_url: str) -> str | None:
    """The server's version, or None when it does not answer (its sections are then skipped)."""
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(sqlalchemy.text("SHOW server_version")).scalar())
    except Exception:
        return None
    finally:
        engine.dispose()


def wait_for_postgres(admin_url: str, seconds: float) -> bool:
    """Wait until the server answers (it may be restarting: the machine is shared)."""
    deadline = time.monotonic() + seconds
    while postgres_version(admin_url) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


@contextmanager
def temporary_postgres(admin_url: str) -> Iterator[str]:
    """A fresh, uniquely named database for one measurement; dropped afterwards.

    A fresh database keeps earlier runs' rows out of the timings (Optuna's queries grow with
    the number of trials in the database, not only in the study).
    """
    name = f"sweep_bench_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        yield url
    finally:
        try:
            with engine.connect() as connection:
                drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                connection.execute(sqlalchemy.text(drop))
        finally:
            engine.dispose()


def training_runtime() -> None:
    """TensorFlow quiet and single-worker threads, Optuna quiet: as a `sweep run` worker."""
    from sweep.nets._runtime import configure_tensorflow
    from sweep.search._optuna import quiet_optuna

    configure_tensorflow(1)
    quiet_optuna()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for servers we start)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sweep_command() -> list[str]:
    """The `sweep` console script beside this interpreter, else `python -m sweep`."""
    script = Path(sys.executable).with_name("sweep")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweep"]


def run_logged(command: list[str], folder: Path, log_name: str, limit: float,
               environment: Mapping[str, str] | None = None) -> tuple[int, float]:
    """A `sweep` command as a user runs it, in `folder` with its own artifacts and no inherited
    storage or campaign, its output in `log_name`, in its own process group (killed whole at
    `limit` seconds or on an interrupt). Returns the exit code and the wall seconds.
    `environment` replaces ours (SWEEP_ARTIFACTS is still set to the folder's).

    Raises:
        subprocess.TimeoutExpired: it ran past `limit`.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "SWEEP_CAMPAIGN")}
    if environment is not None:
        env = dict(environment)
    env["SWEEP_ARTIFACTS"] = str(folder / "artifacts")
    started = time.monotonic()
    with open(folder / log_name, "wb") as output:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=limit)
        except BaseException:  # the limit, or the benchmark interrupted: leave no sweep behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    return code, time.monotonic() - started


def last_line(path: Path) -> str:
    """The last non-empty line of a log, cut to 300 characters (a failed run's reason)."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""


def stored_spec(params: Mapping[str, Any]) -> Any:
    """A registry entry's params (`sweep best`'s: the model spec's fields, and more) as the
    `ModelSpec` the trainer takes, to retrain a winner on other seeds."""
    import dataclasses

    from sweep.nets import ModelSpec

    known = {f.name for f in dataclasses.fields(ModelSpec)}
    values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in params.items() if k in known}
    return ModelSpec(**values)
