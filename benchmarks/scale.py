"""Section 9, scale: K worker processes of the real campaign machinery on one PostgreSQL.

Each worker is `Campaign.join(...).run()`, as `sweep worker` runs it: Optuna's storage with
heartbeats, the sampler and pruner, the slot locks that keep the budget exact, the registry
and its promotions. Only the trainer differs: `LinearTrainer`, a real implementation of the
`sweep.nets.Trainer` protocol in NumPy (a least-squares fit whose quality depends on the
trial's hyperparameters, one report per epoch), so the search loop runs without TensorFlow
and the figures are the machinery's own cost, not training's.

``python -m benchmarks.scale [--sizes 8,32,64] [--repeats 2] [--trials 150]
[--admin-url URL | --own-cluster] [--pgbouncer POOL]`` prints the Markdown rows of
BENCHMARKS.md section 9. `--own-cluster` starts a throwaway PostgreSQL (initdb in /tmp,
`max_connections = 100`, its own port) and stops it afterwards, so a shared server is
neither reconfigured nor crowded.
`--pgbouncer POOL` puts a real PgBouncer (transaction pooling, POOL server connections) between
the workers and that database, the deployment for more workers than `max_connections / 2`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy

from benchmarks._common import (
    DEFAULT_POSTGRES_ADMIN_URL,
    load_average,
    log,
    temporary_postgres,
)
from benchmarks.cluster import OWN_CLUSTER, ConnectionSampler, own_cluster, server_max_connections

SIZES: tuple[int, ...] = (8, 32, 64)
OPERATIONS: tuple[str, ...] = ("add", "multiply")
CAMPAIGN = "scale"
_WORKER_FLAG = "--worker"


# -- the trivial trainer ------------------------------------------------------------------


@dataclass(frozen=True)
class LinearModel:
    """``y = x @ weights + bias`` in float64; saved as JSON, which round-trips floats exactly."""

    weights: tuple[float, ...]
    bias: float
    epochs_run: int = 0
    train_seconds: float = 0.0
    refitted: bool = False
    stopped_reason: str | None = None

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        features = np.asarray(x, dtype=np.float64).reshape(-1, len(self.weights))
        return features @ np.asarray(self.weights, dtype=np.float64) + self.bias

    def to_bytes(self) -> bytes:
        return json.dumps({"weights": list(self.weights), "bias": self.bias}).encode()


class LinearTrainer:
    """A `sweep.nets.Trainer` without Keras: least squares, shrunk by how far the trial's
    learning rate is from 1e-2.5, so trials differ, TPE has a signal, the pruner prunes and
    better models are promoted now and then."""

    def train(
        self,
        spec: Any,
        x_train: npt.NDArray[np.generic],
        y_train: npt.NDArray[np.float64],
        x_val: npt.NDArray[np.generic],
        y_val: npt.NDArray[np.float64],
        *,
        on_epoch: Any = None,
        max_seconds: float = 300.0,
        seed: int = 0,
    ) -> LinearModel:
        started = time.monotonic()
        features = np.asarray(x_train, dtype=np.float64)
        design = np.column_stack([features, np.ones(len(features))])
        solution, *_ = np.linalg.lstsq(design, np.asarray(y_train, np.float64), rcond=None)
        # A power-family trial has no learning rate (0.0): its closed-form fit is the centre.
        rate = spec.learning_rate if spec.learning_rate > 0 else 10**-2.5
        miss = abs(math.log10(rate) + 2.5)
        shrink = 1.0 - min(0.5, 0.02 * miss)
        model = LinearModel(
            tuple(float(w) * shrink for w in solution[:-1]), float(solution[-1]) * shrink
        )
        for epoch in range(int(spec.epochs)):
            if on_epoch is not None:
                # A learning curve: the error falls towards the fit's as epochs pass.
                on_epoch(epoch, model.predict(x_val) * (1.0 + miss / (epoch + 1)))
        return LinearModel(
            model.weights, model.bias, int(spec.epochs), time.monotonic() - started
        )

    def load(self, data: bytes, *, label: str) -> LinearModel:
        raw = json.loads(data)
        return LinearModel(tuple(float(w) for w in raw["weights"]), float(raw["bias"]))

    def versions(self) -> dict[str, str]:
        # The registry records the framework a model needs; here that is NumPy alone.
        return {"keras": "none (NumPy model)", "tensorflow": f"none (NumPy {np.__version__})"}


# -- one worker process -------------------------------------------------------------------


class _CountingReporter:
    """Counts the warnings a worker would print (a failed trial, a database error)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def operation_started(self, status: Any) -> None:
        pass

    def trial_finished(self, status: Any) -> None:
        pass

    def operation_finished(self, status: Any) -> None:
        pass

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def _worker_main() -> int:
    """One worker: join the campaign, run it, print its figures as one JSON line."""
    started = time.monotonic()
    from storage import Database
    from sweep.search.campaign import Campaign

    reporter = _CountingReporter()
    url = os.environ["SWEEP_STORAGE"]
    with Campaign.join(Database(url), CAMPAIGN, LinearTrainer()) as campaign:
        joined = time.monotonic()
        campaign.run(reporter)
        lock_seconds = campaign.slot_lock_seconds
    print(json.dumps({
        "join_seconds": joined - started,
        "run_seconds": time.monotonic() - joined,
        "slot_lock_seconds": lock_seconds,
        "warnings": reporter.warnings,
    }))
    return 0


# -- the measurement ----------------------------------------------------------------------


@dataclass
class ScaleRun:
    workers: int
    repeat: int
    max_connections: int
    trials: int  # budget per operation
    counted: dict[str, int] = field(default_factory=dict)
    running_left: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    peak_connections: int = 0  # this campaign's database
    peak_server_connections: int = 0  # the whole server, our sampler excluded
    wall_seconds: float = math.nan  # first process start to last exit
    span_seconds: float = math.nan  # first trial start to last trial end
    slot_lock_seconds: float = 0.0  # summed over workers
    run_seconds: float = 0.0  # summed over workers: time inside Campaign.run
    load: str = ""
    pgbouncer_pool: int | None = None  # workers reached the server through PgBouncer

    @property
    def exact(self) -> bool:
        return all(c == self.trials for c in self.counted.values()) and len(self.counted) == len(
            OPERATIONS
        )

    @property
    def clean(self) -> bool:
        """What the target asks of every run: exact, nothing RUNNING or FAIL, no errors."""
        return self.exact and not (self.running_left or self.failed or self.errors)

    @property
    def total_trials(self) -> int:
        return sum(self.counted.values())

    def row(self) -> str:
        per_second = self.total_trials / self.wall_seconds
        steady = self.total_trials / self.span_seconds
        lock_share = self.slot_lock_seconds / self.run_seconds if self.run_seconds else math.nan
        per_trial_lock_ms = 1000 * self.slot_lock_seconds / max(1, self.total_trials)
        via = (
            f" via PgBouncer (pool {self.pgbouncer_pool})" if self.pgbouncer_pool else ""
        )
        return (
            f"| {self.workers}{via} | {self.repeat} | {self.total_trials} "
            f"({'exact' if self.exact else 'NOT exact: ' + str(self.counted)}) | "
            f"{self.running_left} | {self.failed} | {len(self.errors)} | "
            f"{self.peak_connections} | {self.peak_server_connections} / {self.max_connections}"
            f" | {per_second:.1f} | {steady:.1f} | {per_trial_lock_ms:.0f} ms "
            f"({100 * lock_share:.1f}%) | {self.wall_seconds:.0f} s | {self.load} |"
        )


HEADER = (
    "| workers | run | trials counted | RUNNING left | FAIL | errors | peak connections "
    "(campaign db) | peak on server / max_connections | trials/s (wall) | trials/s "
    "(first to last trial) | slot-lock wait per trial (share of run time) | wall | load |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


DESCRIPTION = (
    "Each run: a fresh database, the campaign created once (as `sweep run` does), then K worker"
    " processes, each `Campaign.join(...).run()` exactly as `sweep worker` runs it: Optuna's"
    " storage with heartbeats, the TPE sampler and median pruner, the slot locks, the registry"
    " and its promotions. Only the trainer is trivial: `benchmarks.scale.LinearTrainer`, a"
    " NumPy implementation of the `sweep.nets.Trainer` protocol (least squares, quality"
    " depending on the trial's learning rate, one report per epoch), so no TensorFlow is"
    " imported and the figures are the machinery's. *Peak connections*: `pg_stat_activity`"
    " polled every 20 ms on a connection of its own (not counted): the campaign's database,"
    " and every client backend of the server. *Slot-lock wait*: time the workers spent taking"
    " a slot lock, summed, per counted trial and as a share of the workers' summed time in"
    " `Campaign.run`. *Errors*: warnings the workers reported plus workers that exited"
    " non-zero."
)


def render_section(runs: Sequence[ScaleRun], settings: str) -> list[str]:
    """Section 9 of BENCHMARKS.md."""
    if not runs:
        return []
    return [
        "## 9. Scale: many workers on one PostgreSQL",
        "",
        settings,
        "",
        DESCRIPTION,
        "",
        HEADER,
        *(run.row() for run in runs),
    ]


def target_lines(runs: Sequence[ScaleRun]) -> list[str]:
    """The line for "Where we stand against the targets"."""
    if not runs:
        return []
    sizes = sorted({run.workers for run in runs})
    bad = [r for r in runs if not r.clean]
    state = "holds" if not bad else "does not hold yet"
    problems = "; ".join(
        f"{r.workers} workers run {r.repeat}: "
        + ", ".join(
            part for part in (
                "" if r.exact else f"counted {r.counted}",
                f"{r.running_left} RUNNING left" if r.running_left else "",
                f"{r.failed} FAIL" if r.failed else "",
                f"{len(r.errors)} errors" if r.errors else "",
            ) if part
        )
        for r in bad
    )
    return [
        f"- **Scale: {', '.join(map(str, sizes))} worker processes on one PostgreSQL, the"
        f" budget exact, no trial left RUNNING, no errors: {state}** (section 9"
        + (f"; {problems}" if problems else "")
        + ").",
    ]


def scale_settings(
    sizes: Sequence[int], repeats: int, trials: int, cluster: str,
    pgbouncer_pool: int | None = None,
) -> str:
    via = (
        f" through a real PgBouncer (transaction pooling, {pgbouncer_pool} server connections)"
        if pgbouncer_pool else ""
    )
    return (
        f"Worker counts {', '.join(map(str, sizes))}, {repeats} run(s) each; a budget of"
        f" {trials} trials for each of {' and '.join(OPERATIONS)}; {cluster}{via}."
    )


def campaign_config(trials: int) -> Any:
    from sweep.problem.data import DataSpec
    from sweep.search.config import CampaignConfig

    return CampaignConfig(
        name=CAMPAIGN,
        operations=OPERATIONS,
        trials=trials,
        data=DataSpec(examples=2_000, test_examples=200, extrapolation_examples=200),
        stop_when_exact=False,  # every budget filled: the trials are what is measured
    )


def run_scale_once(
    admin_url: str, workers: int, repeat: int, trials: int, pgbouncer_pool: int | None = None
) -> ScaleRun:
    """One campaign with `workers` processes on a fresh database, checked and measured.

    With `pgbouncer_pool`, the workers reach the database through a real PgBouncer in
    transaction pooling mode holding at most that many server connections (the deployment
    docs/deployment.md gives for more workers than `max_connections / 2`).
    """
    import optuna
    from optuna.trial import TrialState

    from storage import Database
    from sweep.search.campaign import Campaign

    run = ScaleRun(workers, repeat, server_max_connections(admin_url), trials)
    run.pgbouncer_pool = pgbouncer_pool
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(temporary_postgres(admin_url))
        with Campaign(campaign_config(trials), Database(url), LinearTrainer()):
            pass  # created (studies, startup designs, campaign row) once, as `sweep run` does
        database = sqlalchemy.engine.make_url(url).database or ""
        worker_url = url
        if pgbouncer_pool is not None:
            from benchmarks.pgbouncer import pgbouncer_in_front_of

            worker_url = stack.enter_context(pgbouncer_in_front_of(
                url, pool_size=pgbouncer_pool, max_client_conn=max(100, 4 * workers)
            ))
        env = {**os.environ, "SWEEP_STORAGE": worker_url, "SWEEP_WORKERS": str(workers)}
        command = [sys.executable, "-m", "benchmarks.scale", _WORKER_FLAG]
        with ConnectionSampler(admin_url, database) as sampler:
            started = time.monotonic()
            processes = [
                subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                for _ in range(workers)
            ]
            outputs = [p.communicate(timeout=1800) for p in processes]
            run.wall_seconds = time.monotonic() - started
        run.peak_connections = sampler.peak_database
        run.peak_server_connections = sampler.peak_server
        for process, (stdout, stderr) in zip(processes, outputs, strict=True):
            if process.returncode != 0 or "Traceback" in stderr:
                run.errors.append(f"exit {process.returncode}: {stderr.strip()[-400:]}")
                continue
            figures = json.loads(stdout.strip().splitlines()[-1])
            run.slot_lock_seconds += figures["slot_lock_seconds"]
            run.run_seconds += figures["run_seconds"]
            run.errors += figures["warnings"]
        first: float = math.inf
        last: float = -math.inf
        for operation in OPERATIONS:
            study = optuna.load_study(study_name=f"{CAMPAIGN}.{operation}", storage=url)
            trials_ = study.get_trials(deepcopy=False)
            counted = [t for t in trials_ if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            run.counted[operation] = len(counted)
            run.running_left += sum(t.state == TrialState.RUNNING for t in trials_)
            run.failed += sum(t.state == TrialState.FAIL for t in trials_)
            for t in counted:
                assert t.datetime_start is not None and t.datetime_complete is not None
                first = min(first, t.datetime_start.timestamp())
                last = max(last, t.datetime_complete.timestamp())
        run.span_seconds = last - first
    run.load = load_average()
    return run


def run_scale(
    admin_url: str, sizes: Sequence[int], repeats: int, trials: int,
    pgbouncer_pool: int | None = None,
) -> list[ScaleRun]:
    runs = []
    for workers in sizes:
        for repeat in range(1, repeats + 1):
            log(f"scale: {workers} workers, run {repeat} (load {load_average()})")
            run = run_scale_once(admin_url, workers, repeat, trials, pgbouncer_pool)
            log(f"scale: {run.row()}")
            runs.append(run)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == [_WORKER_FLAG]:
        return _worker_main()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trials", type=int, default=150, help="budget per operation")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--admin-url", default=DEFAULT_POSTGRES_ADMIN_URL)
    where.add_argument("--own-cluster", action="store_true")
    parser.add_argument(
        "--pgbouncer", type=int, default=None, metavar="POOL",
        help="workers go through a real PgBouncer (transaction pooling) holding at most POOL "
        "server connections",
    )
    args = parser.parse_args(arguments)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    from storage import mask_url
    from sweep.search._optuna import quiet_optuna

    quiet_optuna()
    log(f"scale: load at start {load_average()}")
    cluster = own_cluster() if args.own_cluster else contextlib.nullcontext(args.admin_url)
    with cluster as admin_url:
        runs = run_scale(admin_url, sizes, args.repeats, args.trials, args.pgbouncer)
    place = OWN_CLUSTER if args.own_cluster else f"the server at {mask_url(args.admin_url)}"
    settings = scale_settings(sizes, args.repeats, args.trials, place, args.pgbouncer)
    print("\n".join(render_section(runs, settings)))
    bad = [r for r in runs if not r.clean]
    for run in bad:
        for error in run.errors[:3]:
            log(f"scale: {run.workers} workers run {run.repeat}: {error}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
