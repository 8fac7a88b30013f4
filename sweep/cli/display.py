"""Rendering for the CLI (rich): live progress per operation and the results tables.

Everything shown comes from user input or the database (names, expressions, registry
strings), so it is shown as text, never as rich markup, and with control characters escaped:
an ANSI or OSC-8 sequence in a stored string must not reach the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from storage import ModelEntry
from sweep.cli.text import safe, say
from sweep.problem.operations import Operation
from sweep.publishing.format import format_value as _fmt
from sweep.publishing.summary import BestRow
from sweep.search.reporting import OperationStatus

_err = Console(stderr=True)
# Outside a terminal rich would squeeze the wide results table into 80 columns.
_out = Console(width=None if sys.stdout.isatty() else 200)


class ProgressReporter:
    """One progress bar per operation: counted trials / budget and the best value so far.

    On a terminal the bars update live; otherwise one line per finished operation is printed.
    """

    def __init__(self, live: bool | None = None) -> None:
        self.live = _err.is_terminal if live is None else live
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best val {task.fields[best]}"),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
            console=_err,
            disable=not self.live,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressReporter:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def operation_started(self, status: OperationStatus) -> None:
        self.tasks[status.operation] = self.progress.add_task(
            status.operation,
            total=status.budget,
            completed=status.finished,
            best=_fmt(status.best_value),
            state="",
        )

    def trial_finished(self, status: OperationStatus) -> None:
        self.progress.update(
            self.tasks[status.operation],
            completed=status.finished,
            best=_fmt(status.best_value),
            state=(status.last_state or "").lower(),
        )

    def operation_finished(self, status: OperationStatus) -> None:
        """The closing line: `status` holds the study's count and best, read from the
        database at the end (every worker's trials), so all workers print the same figure."""
        task = self.tasks[status.operation]
        self.progress.update(task, total=status.finished, completed=status.finished)
        if not self.live:
            say(
                f"{status.operation}: {status.finished} trials counted, best validation error "
                f"{_fmt(status.best_value)}",
                err=True,
            )

    def warning(self, message: str) -> None:
        if self.live:
            self.progress.console.print(Text.assemble(("warning: ", "yellow"), safe(message)))
        else:
            say(f"warning: {message}", err=True)


class QuietReporter(ProgressReporter):
    """For workers started by `run --workers K`: the parent shows progress; warnings only."""

    def __init__(self) -> None:
        super().__init__(live=False)

    def operation_finished(self, status: OperationStatus) -> None:
        pass


def _cells(*values: object) -> list[Text]:
    """Table cells as plain text: a "[bold]" in a stored string is shown, not obeyed."""
    return [Text(safe(value)) for value in values]


def print_best_table(
    entries: Sequence[ModelEntry],
    operations: Sequence[Operation] | None,
    stopped_exact: Mapping[str, int] | None = None,
) -> None:
    """Best model per operation; metrics on unseen in-range pairs and the extrapolation band.

    With `stopped_exact` (operation -> trial, from `sweep run`), a last column says which
    operations stopped at an exact model, and at which trial.
    """
    table = Table(title="Best model per operation (metrics on unseen inputs)")
    headers = [
        "operation", "trial", "normalisation in/target", "architecture", "learning rate",
        "MAE", "median rel. error", "hit rate", "extrap. hit rate", "extrap. median rel. error",
    ]
    if stopped_exact is not None:
        headers.append("stopped")
    for header in headers:
        table.add_column(header, overflow="fold")
    by_op = {e.operation: e for e in entries}
    names = [op.name for op in operations] if operations is not None else list(by_op)
    for name in names:
        entry = by_op.get(name)
        stopped = []
        if stopped_exact is not None:
            trial = stopped_exact.get(name)
            stopped = ["—" if trial is None else f"exact at trial {trial}"]
        if entry is None:
            table.add_row(*_cells(
                name, "—", "no model yet (every trial pruned or failed)", *["—"] * 7, *stopped
            ))
            continue
        row = BestRow.from_entry(entry)
        table.add_row(*_cells(
            name,
            str(row.trial),
            row.normalisation,
            row.architecture,
            _fmt(row.learning_rate, 3),
            _fmt(row.mae),
            _fmt(row.median_relative_error),
            _fmt(row.hit_rate),
            _fmt(row.extrapolation_hit_rate),
            _fmt(row.extrapolation_median_relative_error),
            *stopped,
        ))
    _out.print(table)


def print_history(entries: Sequence[ModelEntry]) -> None:
    table = Table(title="Registry history")
    for header in (
        "operation", "version", "best", "trial", "validation objective", "hit rate",
        "extrap. hit rate", "size (bytes)", "sha256", "created (UTC)",
    ):
        table.add_column(header)
    for e in entries:
        table.add_row(*_cells(
            e.operation,
            str(e.version),
            "*" if e.is_best else "",
            str(e.trial_number),
            _fmt(e.objective_value, 6),
            _fmt(e.metrics.get("test_hit_rate")),
            _fmt(e.metrics.get("extrapolation_hit_rate")),
            str(e.size_bytes),
            e.sha256[:12],
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        ))
    _out.print(table)
