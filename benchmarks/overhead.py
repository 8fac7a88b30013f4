"""Per-trial cost of everything but training: sampling, pruning checks and storage.

A trivial objective goes through the campaign's real machinery (its storage with heartbeats,
its TPE sampler and pruner, the default space's `suggest`, a report per epoch and the user
attributes a real trial writes), and the loop around it does the per-trial bookkeeping
`Campaign.run_operation` does. What is left is the price of a trial before any training.

The same objective through plain Optuna (`RDBStorage(url)` as `optuna.create_study(storage=url)`
builds it, Optuna's own TPE sampler and median pruner with the same settings, `study.optimize`
alone) is the reference the sweep's machinery must not be slower than. Both count what they
write per trial (statements and transactions that write), the heartbeats included.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from benchmarks._common import log, median
from benchmarks.tables import percent, significant, table, times
from storage import Database
from sweep.nets import ModelSpec
from sweep.problem.metrics import SPLITS
from sweep.search._optuna.internals import trial_id
from sweep.search._optuna.sampling import OneReadTPESampler, SnapshotPruner
from sweep.search.budget import best_value, trial_counts
from sweep.search.config import CampaignConfig
from sweep.search.pruners import make_pruner
from sweep.search.samplers import TPE_STARTUP_TRIALS, make_sampler, operation_seed
from sweep.search.space import SearchSpace
from sweep.search.storage import backend_of
from sweep.search.storage import optuna_storage as open_optuna_storage

OPERATION = "multiply"
# Size of the window of trials whose median is reported at each study size.
WINDOW = 10


# Where a trial's time goes, besides the total.
PARTS: tuple[str, ...] = (
    "sampling", "write params", "report", "should_prune", "attributes", "bookkeeping",
)
METRIC_NAMES: tuple[str, ...] = (
    "mae", "median_relative_error", "max_absolute_error", "hit_rate", "count",
)


SWEEP = "sweep"
OPTUNA = "Optuna alone"
# Issue 18: the sweep's cost per trial outside training, against plain Optuna's, at these sizes.
OPTUNA_TARGET = 1.0
OPTUNA_TARGET_SIZES = (100, 1000)


@dataclass(frozen=True)
class OverheadResult:
    backend: str
    per_trial_ms: dict[int, float]  # study size -> median ms of the WINDOW timed trials
    parts_ms: dict[int, dict[str, float]]  # study size -> part -> median ms
    fill_seconds: float  # time spent pre-filling the study (not a measurement)
    total_seconds: float
    machinery: str = SWEEP  # SWEEP, or OPTUNA for the plain-Optuna reference
    # study size -> mean per timed trial of: statements that write (INSERT, UPDATE, DELETE)
    # and transactions that wrote at least one of them
    writes_per_trial: dict[int, float] = dataclasses.field(default_factory=dict)
    write_transactions_per_trial: dict[int, float] = dataclasses.field(default_factory=dict)


class _WriteCounter:
    """Counts an engine's writing statements and the transactions that held them."""

    def __init__(self, engine: sqlalchemy.engine.Engine) -> None:
        self.statements = 0
        self.transactions = 0
        self._open: set[int] = set()  # connections with a write since their last commit
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._execute)
        sqlalchemy.event.listen(engine, "commit", self._commit)

    def _execute(self, connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:6].upper() in {"INSERT", "UPDATE", "DELETE"}:
            self.statements += 1
            self._open.add(id(connection))

    def _commit(self, connection: Any) -> None:
        if id(connection) in self._open:
            self._open.discard(id(connection))
            self.transactions += 1


def _synthetic_value(spec: ModelSpec) -> float:
    """A made-up validation error with structure, so TPE has something to model."""
    # A power-family trial has no learning rate (0.0): its closed-form fit is the centre.
    rate = spec.learning_rate if spec.learning_rate > 0 else 10**-2.5
    return abs(math.log10(rate) + 2.5) + 0.1 * len(spec.hidden_layers)


def _user_attrs(spec: ModelSpec, value: float) -> dict[str, Any]:
    """The user attributes a real trial writes (names and sizes), with made-up values."""
    attrs: dict[str, Any] = {
        "worker": "bench",
        "architecture": spec.architecture(2),
        "parameters": spec.parameter_count(2),
        "model_spec": dataclasses.asdict(spec),
        "epochs_run": spec.epochs,
        "train_seconds": 1.0,
        "refitted_output": spec.refit_output,
    }
    for _, prefix in SPLITS:
        for name in METRIC_NAMES:
            attrs[f"{prefix}{name}"] = value
    return attrs


class _TimedObjective:
    """The trivial objective; records how long each part of the last trial took."""

    def __init__(self, space: SearchSpace, epochs: int) -> None:
        self.space = space
        self.epochs = epochs
        self.parts: dict[str, float] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        clock = time.perf_counter
        started = clock()
        spec = self.space.suggest(trial)
        sampled = clock()
        storage = backend_of(trial.study)
        if storage is not None:  # as the real objective: parameters stored before training
            storage.flush(trial_id(trial))
        flushed = clock()
        value = _synthetic_value(spec)
        report = prune = 0.0
        for epoch in range(self.epochs):
            before = clock()
            trial.report(value * (1 + 1 / (epoch + 1)), epoch)
            reported = clock()
            # Asked, not obeyed: every trial pays for all its epochs, so the figures at each
            # study size differ by the study's size alone, not by how many trials got pruned.
            trial.should_prune()
            report += reported - before
            prune += clock() - reported
        before_attrs = clock()
        for key, attr in _user_attrs(spec, value).items():
            trial.set_user_attr(key, attr)
        if storage is not None:  # as the real objective: its writes before it returns
            storage.flush(trial_id(trial))
        self.parts = {
            "sampling": sampled - started,
            "write params": flushed - sampled,
            "report": report,
            "should_prune": prune,
            "attributes": clock() - before_attrs,
        }
        return value


def _filler_trials(
    space: SearchSpace, epochs: int, count: int, seed: int
) -> list[optuna.trial.FrozenTrial]:
    """Finished trials like the real ones (same parameters, a curve of reports, the same
    attributes), drawn at random in memory: fast to add, and what a study of that size holds."""
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    made = []
    for _ in range(count):
        trial = scratch.ask()
        spec = space.suggest(trial)
        value = _synthetic_value(spec)
        made.append(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=trial.distributions,
                value=value,
                intermediate_values={e: value * (1 + 1 / (e + 1)) for e in range(epochs)},
                user_attrs=_user_attrs(spec, value),
            )
        )
    return made


def _plain_sampler(config: CampaignConfig) -> optuna.samplers.BaseSampler:
    """Optuna's own TPE with the settings of the campaign's (`make_sampler`)."""
    ours = make_sampler(config, OPERATION)
    assert isinstance(ours, OneReadTPESampler), "the default sampler is TPE"
    return optuna.samplers.TPESampler(
        seed=operation_seed(config.seed, OPERATION),
        multivariate=True,
        group=True,
        n_startup_trials=TPE_STARTUP_TRIALS,
    )


def _plain_pruner(config: CampaignConfig, epochs: int) -> optuna.pruners.BasePruner:
    """Optuna's median pruner, asked directly (the campaign asks it through a snapshot)."""
    ours = make_pruner(config, epochs)
    return ours.pruner if isinstance(ours, SnapshotPruner) else ours


class Measurement:
    """One study on one backend through one machinery, measured window by window."""

    def __init__(self, url: str, backend: str, sizes: tuple[int, ...], machinery: str) -> None:
        self.backend = backend
        self.machinery = machinery
        self.config = CampaignConfig(
            name="overhead", operations=(OPERATION,), trials=max(sizes), stop_when_exact=False
        )
        self.space = self.config.space_for(OPERATION)
        self.epochs = int(max(self.space.epochs.values()))
        self.plain = machinery == OPTUNA
        self.storage = (
            optuna.storages.RDBStorage(url) if self.plain else open_optuna_storage(Database(url))
        )
        self.counter = _WriteCounter(self.storage.engine)
        self.study = optuna.create_study(
            storage=self.storage,
            study_name=f"overhead.{OPERATION}",
            sampler=(
                _plain_sampler(self.config)
                if self.plain
                else make_sampler(self.config, OPERATION)
            ),
            pruner=(
                _plain_pruner(self.config, self.epochs)
                if self.plain
                else make_pruner(self.config, self.epochs)
            ),
        )
        self.objective = _TimedObjective(self.space, self.epochs)
        self.per_size: dict[int, float] = {}
        self.parts: dict[int, dict[str, float]] = {}
        self.writes: dict[int, float] = {}
        self.write_transactions: dict[int, float] = {}
        self.fill_seconds = 0.0
        self.seconds = 0.0

    def window(self, size: int) -> None:
        """Fill the study up to ``size - WINDOW`` trials, then time WINDOW trials."""
        study = self.study
        missing = size - WINDOW - len(study.get_trials(deepcopy=False))
        if missing > 0:
            fill_started = time.monotonic()
            study.add_trials(_filler_trials(self.space, self.epochs, missing, seed=size))
            self.fill_seconds += time.monotonic() - fill_started
        started = time.monotonic()
        durations: list[float] = []
        window_parts: list[dict[str, float]] = []
        statements, transactions = self.counter.statements, self.counter.transactions
        for _ in range(WINDOW):
            trial_started = time.perf_counter()
            if self.plain:
                study.optimize(self.objective, n_trials=1)
            else:
                trial_counts(study)  # the slot check before each trial
                study.optimize(self.objective, n_trials=1)
                trial_counts(study)  # progress after each trial
                best_value(study)
            total = time.perf_counter() - trial_started
            durations.append(total)
            trial_parts = dict(self.objective.parts)
            trial_parts["bookkeeping"] = total - sum(trial_parts.values())
            window_parts.append(trial_parts)
        self.seconds += time.monotonic() - started
        self.writes[size] = (self.counter.statements - statements) / WINDOW
        self.write_transactions[size] = (self.counter.transactions - transactions) / WINDOW
        self.per_size[size] = 1000 * median(durations)
        self.parts[size] = {
            part: 1000 * median(p[part] for p in window_parts) for part in window_parts[0]
        }
        log(
            f"overhead {self.backend} ({self.machinery}): at {size} trials,"
            f" {self.per_size[size]:.0f} ms per trial, {self.writes[size]:.1f} writes in"
            f" {self.write_transactions[size]:.1f} transactions"
        )

    def result(self) -> OverheadResult:
        self.storage.engine.dispose()
        return OverheadResult(
            self.backend,
            self.per_size,
            self.parts,
            self.fill_seconds,
            self.seconds,
            self.machinery,
            self.writes,
            self.write_transactions,
        )


def side_by_side(
    urls: dict[str, str], backend: str, sizes: tuple[int, ...]
) -> list[OverheadResult]:
    """The sweep's machinery and plain Optuna (`urls`: machinery -> a fresh database each),
    window by window at each of `sizes`, alternating which goes first, so the load of a shared
    machine weighs on both alike.

    Before each window the study is filled with finished trials up to ``size - WINDOW`` (in
    memory, then `add_trials`), so the cost at 1000 trials is measured without running 990
    timed trials first. Every timed trial reports all epochs of the cap and completes: an
    upper bound for a real trial, which stops reporting when it is pruned. Plain Optuna has
    its own storage, sampler and pruner, and no bookkeeping.
    """
    measurements = [Measurement(urls[m], backend, sizes, m) for m in (SWEEP, OPTUNA)]
    for turn, size in enumerate(sorted(sizes)):
        for measurement in measurements if turn % 2 == 0 else reversed(measurements):
            measurement.window(size)
    return [m.result() for m in measurements]


def run_overhead(
    postgres_url: str | None,
    sizes: tuple[int, ...],
    fresh_postgres: Callable[[], AbstractContextManager[str]] | None = None,
) -> list[OverheadResult]:
    """Side by side on SQLite (a fresh file each) and, when given, PostgreSQL (`postgres_url`
    for the sweep, a fresh database from `fresh_postgres` for plain Optuna: two studies of
    the same name cannot share one)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-overhead-") as folder:
        urls = {m: f"sqlite:///{Path(folder) / f'overhead-{n}.db'}" for n, m in enumerate(
            (SWEEP, OPTUNA)
        )}
        results += side_by_side(urls, "SQLite", sizes)
    if postgres_url is not None:
        if fresh_postgres is None:
            raise ValueError("plain Optuna on PostgreSQL needs its own database")
        with fresh_postgres() as plain_url:
            results += side_by_side({SWEEP: postgres_url, OPTUNA: plain_url}, "PostgreSQL", sizes)
    return results


# --- the report ------------------------------------------------------------------------------


def sweep_results(overhead: Sequence[OverheadResult]) -> list[OverheadResult]:
    """The sweep's machinery's figures (not plain Optuna's reference)."""
    return [o for o in overhead if o.machinery == SWEEP]


def against_optuna(overhead: Sequence[OverheadResult]) -> list[tuple[str, int, float, float]]:
    """(backend, study size, ours ms, plain Optuna's ms) where both were measured."""
    plain = {o.backend: o for o in overhead if o.machinery == OPTUNA}
    pairs = []
    for ours in sweep_results(overhead):
        reference = plain.get(ours.backend)
        if reference is None:
            continue
        for size in sorted(ours.per_trial_ms):
            if size in reference.per_trial_ms:
                pairs.append(
                    (ours.backend, size, ours.per_trial_ms[size], reference.per_trial_ms[size])
                )
    return pairs


def _optuna_comparison(overhead: Sequence[OverheadResult]) -> list[str]:
    """Section 3's second half: ours against plain Optuna, time and writes per trial."""
    pairs = against_optuna(overhead)
    if not pairs:
        return []
    by_key = {(o.backend, o.machinery): o for o in overhead}
    lines = [
        "",
        "Against plain Optuna: the same trivial objective (same space, reports, pruning"
        " checks, attributes) through `optuna.create_study(storage=RDBStorage(url))` with"
        " Optuna's own TPE (same settings: multivariate, grouped, same startup trials and"
        " seed) and median pruner (same settings, asked directly), `study.optimize` alone:"
        " no heartbeats, no bookkeeping. Same study sizes and fill, same backends (its own"
        " fresh SQLite file or PostgreSQL database), measured side by side: at each study size"
        " one window each, alternating which goes first. *Writes*: statements that write"
        " (INSERT, UPDATE, DELETE) per timed trial, and the transactions that held them,"
        " heartbeats included.",
        "",
    ]
    rows = []
    for backend, size, ours_ms, plain_ms in pairs:
        ours = by_key[(backend, SWEEP)]
        plain = by_key[(backend, OPTUNA)]
        rows.append([
            backend, str(size), significant(ours_ms, 3), significant(plain_ms, 3),
            times(ours_ms / plain_ms),
            f"{significant(ours.writes_per_trial.get(size, math.nan), 3)} in"
            f" {significant(ours.write_transactions_per_trial.get(size, math.nan), 3)}",
            f"{significant(plain.writes_per_trial.get(size, math.nan), 3)} in"
            f" {significant(plain.write_transactions_per_trial.get(size, math.nan), 3)}",
        ])
    lines += table(
        ["backend", "trials in study", "sweep ms/trial", "Optuna alone ms/trial",
         "sweep / Optuna", "sweep writes in transactions", "Optuna writes in transactions"],
        rows,
    )
    return lines


def render_section(
    overhead: Sequence[OverheadResult], export_ms: float, typical_trial_seconds: float
) -> list[str]:
    """Section 3 of BENCHMARKS.md; `typical_trial_seconds` (training per trial in section 1's
    sweeps, NaN when not measured) turns the costs into shares of wall time."""
    if not overhead:
        return []
    ours = sweep_results(overhead)
    sizes = sorted({size for o in ours for size in o.per_trial_ms})
    lines = [
        "## 3. Per-trial overhead: sampling + storage",
        "",
        "A trivial objective through the campaign's own machinery: `optuna_storage`"
        " (engine options, heartbeats, writes buffered per trial), `make_sampler` (TPE,"
        " multivariate, grouped), `make_pruner` (median, asked with a per-trial snapshot of"
        " the finished trials), the default space's `suggest` and the write of its parameters"
        " before training, one `report` + `should_prune` per epoch of the epoch cap (asked"
        " every epoch, never obeyed, so every trial costs the same: an upper bound for a real"
        " trial, which stops reporting when pruned), the user attributes a real trial writes"
        " and the write of the trial's buffer (its reports and attributes) the objective"
        " makes before it returns ('attributes'), and the per-trial counting"
        " `Campaign.run_operation` does ('bookkeeping': Optuna's end of the trial, its"
        " heartbeat thread, and the counts)."
        " To measure a study of N trials, the study is first filled up to N"
        f" - {WINDOW} with finished trials drawn at random from the same space (same"
        f" parameters, reports and attributes), then {WINDOW} trials are timed; each figure"
        " is their median. One fresh study per backend (a fresh SQLite file, a fresh"
        " PostgreSQL database).",
        "",
    ]
    rows = [
        [o.backend, *[significant(o.per_trial_ms.get(size, math.nan), 3) for size in sizes]]
        for o in ours
    ]
    lines += table(["backend", *[f"ms/trial at {size} trials" for size in sizes]], rows)
    lines += ["", "Where a trial's time goes (median ms per trial; 'report' and 'should_prune'"
              " are summed over the epochs of the cap):", ""]
    rows = []
    for o in ours:
        for size in sizes:
            parts = o.parts_ms.get(size, {})
            cells = [significant(parts.get(p, math.nan), 3) for p in PARTS]
            rows.append([o.backend, str(size), *cells])
    lines += table(["backend", "trials in study", *PARTS], rows)
    lines += _optuna_comparison(overhead)
    lines += [
        "",
        f"Export (save the .keras archive + reload it in safe mode, 2-16-16-1): "
        f"{significant(export_ms)} ms per promotion (only trials that beat the best promote).",
    ]
    typical = typical_trial_seconds
    if not math.isnan(typical):
        lines += [
            "",
            "Estimated share of wall time outside training at each study size: overhead /"
            f" (overhead + {typical:.2f} s), the training seconds per trial of section 1's"
            " sweeps (median over operations). Evaluation and export are not in this overhead,"
            " so the estimate errs low.",
            "",
        ]
        rows = []
        for o in ours:
            cells = [o.backend]
            for size in sizes:
                cost = o.per_trial_ms.get(size, math.nan) / 1000
                cells.append(percent(cost / (cost + typical)))
            rows.append(cells)
        lines += table(["backend", *[f"at {size} trials" for size in sizes]], rows)
    return lines


def target_lines(overhead: Sequence[OverheadResult]) -> list[str]:
    """The line for "Where we stand against the targets": ours against plain Optuna."""
    pairs = [p for p in against_optuna(overhead) if p[1] in OPTUNA_TARGET_SIZES]
    if not pairs:
        return []
    holds = all(ours <= OPTUNA_TARGET * plain for _, _, ours, plain in pairs)
    state = "holds" if holds else "does not hold yet"
    figures = "; ".join(
        f"{backend} at {size} trials {times(ours / plain)}"
        f" ({significant(ours, 3)} vs {significant(plain, 3)} ms)"
        for backend, size, ours, plain in pairs
    )
    return [
        f"- **Per-trial cost outside training at most {OPTUNA_TARGET}x plain Optuna's"
        f" `study.optimize` (same sampler, pruner, storage, reports): {state}** ({figures};"
        " section 3).",
    ]
