"""Rendering for the CLI (rich): progress per operation, log lines and the results tables.

Everything shown comes from user input or the database (names, expressions, registry
strings), so it is shown as text, never as rich markup, and with control characters escaped:
an ANSI or OSC-8 sequence in a stored string must not reach the terminal.

Progress is written to stderr: live bars on a terminal; elsewhere (a pipe, `docker compose
logs`) and for `sweep worker`, one timestamped line per event, flushed at once; with
`--log-format json`, one JSON object per line (`LOG_KEYS`). Tables go to stdout, laid out for
the width the console reports (off a terminal: $COLUMNS, else 80), never wider and never
breaking a word: low-priority columns are left out, and when even the essential ones do not
fit, each row is stacked into "label: value" lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TimeElapsedColumn
from rich.table import Column
from rich.text import Text

from storage import ModelEntry
from sweep.cli.text import TableColumn, cell_len, print_table, safe, say, utc_timestamp
from sweep.problem.operations import Operation
from sweep.publishing.format import format_value as _fmt
from sweep.publishing.summary import BestRow
from sweep.search.reporting import BUDGET_MET, EXACT, TIME_UP, OperationStatus

__all__ = [
    "LOG_KEYS",
    "LiveReporter",
    "LogReporter",
    "make_reporter",
    "print_best_table",
    "print_history",
]

_err = Console(stderr=True)

LOG_KEYS = (
    "time", "event", "campaign", "operation", "trial", "state", "value", "best", "counted",
    "budget", "version", "reason", "message",
)
"""Every JSON log line has exactly these keys (null where they do not apply)."""

ExactLookup = Callable[[str], int | None]
"""operation -> the trial of its exact registry best, if any (for a status without a reason)."""


def _reason(status: OperationStatus, exact: ExactLookup | None) -> str:
    """Why a done operation stopped. A status read from the study (the parent of `run
    --workers K`) has no reason of its own: the registry and the counts tell it."""
    if status.stopped is not None:
        return status.stopped
    if status.exact_trial is None and exact is not None:
        status.exact_trial = exact(status.operation)
    if status.exact_trial is not None:
        return EXACT
    if status.budget is not None and status.finished >= status.budget:
        return BUDGET_MET
    return TIME_UP


def _counted(status: OperationStatus) -> str:
    return f"{status.finished}" if status.budget is None else f"{status.finished}/{status.budget}"


# -- live progress bars ---------------------------------------------------------------------


class _NameColumn(ProgressColumn):
    def __init__(self, width: int) -> None:
        super().__init__(Column(width=width, no_wrap=True, overflow="ellipsis"))

    def render(self, task: Task) -> Text:
        return Text(task.description, no_wrap=True, overflow="ellipsis")


class _CountColumn(ProgressColumn):
    """Counted trials of the budget: ``7/20``, or ``7 trials`` with a time budget alone."""

    def render(self, task: Task) -> Text:
        done = int(task.completed)
        budget = task.fields["budget"]
        return Text(f"{done} trials" if budget is None else f"{done}/{budget}")


class _BestColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"best {task.fields['best']}")


class _EndColumn(ProgressColumn):
    """``ETA 0:01:05`` while the operation runs; once done, why it stopped."""

    def __init__(self) -> None:
        super().__init__(Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        reason = task.fields.get("reason")
        if reason:
            return Text(reason, style="green" if reason == EXACT else "")
        eta = _eta(task)
        if eta is None:
            return Text("ETA ?", style="progress.remaining")
        minutes, seconds = divmod(int(eta + 0.5), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"ETA {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def _eta(task: Task) -> float | None:
    """Seconds left: the trials left at this process's pace so far, or the time left of the
    timeout (from the operation's start here), whichever ends first."""
    elapsed = task.elapsed or 0.0
    estimates = []
    timeout = task.fields.get("timeout")
    if timeout is not None:
        estimates.append(max(0.0, timeout - elapsed))
    ran = task.completed - task.fields["base"]
    if task.total is not None and ran > 0:
        estimates.append(max(0.0, task.total - task.completed) * elapsed / ran)
    return min(estimates) if estimates else None


class LiveReporter:
    """One live progress bar per operation on a terminal (stderr): counted trials of the
    budget, best validation error, elapsed time, ETA; a finished bar ends with why it stopped:
    "exact", "budget met" or "time up". Laid out for the console's width: the operation's
    whole name (`names`: those to come) when it fits, the elapsed time when there is room."""

    def __init__(
        self,
        *,
        timeout: float | None = None,
        exact: ExactLookup | None = None,
        console: Console | None = None,
        names: Sequence[str] = (),
    ) -> None:
        self.console = console or _err
        self.timeout = timeout
        self.exact = exact
        # Fixed: the count (7), "best 1.234e-05" (14), "ETA 0:00:00" (11) and the gaps (4);
        # the elapsed time (7 and a gap) if the name and a bar of 10 still fit beside it.
        longest = min(32, max([cell_len(safe(name)) for name in names] or [12]))
        fixed = 36
        elapsed = self.console.width - fixed - 8 >= longest + 10
        room = self.console.width - fixed - (8 if elapsed else 0)
        name = min(longest, max(8, room - 10))
        columns: list[ProgressColumn] = [
            _NameColumn(name),
            BarColumn(bar_width=max(4, min(40, room - name))),
            _CountColumn(),
            _BestColumn(),
        ]
        if elapsed:
            columns.append(TimeElapsedColumn())
        self.progress = Progress(*columns, _EndColumn(), console=self.console)
        self.tasks: dict[str, Any] = {}
        self._polled: set[str] = set()

    def __enter__(self) -> LiveReporter:
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
            safe(status.operation),
            total=status.budget,
            completed=status.finished,
            best=_fmt(status.best_value),
            budget=status.budget,
            base=status.finished,
            timeout=self.timeout,
            reason=None,
        )

    def trial_finished(self, status: OperationStatus) -> None:
        task = self.tasks[status.operation]
        if status.trial is None and status.operation not in self._polled:
            # The first look at the study (`run --workers K`): what was counted before this
            # run is no pace of its own, the clock starts now.
            self._polled.add(status.operation)
            self.progress.reset(
                task, total=status.budget, completed=status.finished, base=status.finished
            )
        self.progress.update(task, completed=status.finished, best=_fmt(status.best_value))

    def operation_finished(self, status: OperationStatus) -> None:
        """The closing state: `status` holds the study's count and best, read from the
        database at the end (every worker's trials), so all workers show the same figure."""
        task = self.tasks[status.operation]
        self.progress.update(  # a full bar: done, whatever budget is left (the count says)
            task, total=max(status.finished, 1), completed=max(status.finished, 1),
            best=_fmt(status.best_value),
            reason=_reason(status, self.exact),
        )
        self.progress.stop_task(task)

    def warning(self, message: str) -> None:
        self.progress.console.print(Text.assemble(("warning: ", "yellow"), safe(message)))

    def note(self, message: str, event: str = "note") -> None:
        """A line of its own (the campaign announced); `event` names it in JSON logs."""
        self.progress.console.print(Text(safe(message)))  # wrapped at spaces


# -- log lines --------------------------------------------------------------------------


class LogReporter:
    """One line per event on stderr, written and flushed at once: an operation started, a
    trial finished, a model promoted, an operation done (and why), a warning.

    Text lines start with an ISO 8601 UTC timestamp; with `json_lines`, each line is one JSON
    object with the keys `LOG_KEYS`. With `quiet` (the workers of `run --workers K`, whose
    parent reports the operations), only trials, promotions and warnings.
    """

    def __init__(
        self,
        campaign: str,
        *,
        json_lines: bool = False,
        quiet: bool = False,
        warnings_only: bool = False,
        exact: ExactLookup | None = None,
    ) -> None:
        self.campaign = campaign
        self.json_lines = json_lines
        self.quiet = quiet or warnings_only
        self.warnings_only = warnings_only
        self.exact = exact

    def __enter__(self) -> LogReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def emit(self, event: str, text: str, **fields: object) -> None:
        """One line: `text` after a timestamp, or a JSON object with `fields`."""
        now = utc_timestamp()
        if not self.json_lines:
            say(f"{now} {text}", err=True)
            return
        record: dict[str, object] = dict.fromkeys(LOG_KEYS)
        record.update(time=now, event=event, campaign=self.campaign, **fields)
        for key, value in record.items():  # JSON has no NaN or infinity
            if isinstance(value, float) and not math.isfinite(value):
                record[key] = None
        # ensure_ascii: the line is plain ASCII, every control character \u-escaped.
        say(json.dumps(record, ensure_ascii=True, allow_nan=False), err=True)

    def operation_started(self, status: OperationStatus) -> None:
        if self.quiet:
            return
        self.emit(
            "operation_started",
            f"{status.operation}: started; {_counted(status)} trials counted, best validation "
            f"error {_fmt(status.best_value)}",
            **_operation_fields(status),
        )

    def trial_finished(self, status: OperationStatus) -> None:
        if status.trial is None or self.warnings_only:
            return  # a look at the study (`run --workers K`): its workers report the trials
        state = status.trial_state or "?"
        value = status.trial_value
        shown = "" if value is None else f", validation error {_fmt(value)}"
        self.emit(
            "trial",
            f"{status.operation}: trial {status.trial} {state.lower()}{shown}; "
            f"{_counted(status)} counted, best {_fmt(status.best_value)}",
            **_operation_fields(status), trial=status.trial, state=state, value=value,
        )
        if status.trial_version is not None:
            self.emit(
                "promoted",
                f"{status.operation}: trial {status.trial} promoted, registry version "
                f"{status.trial_version}",
                operation=status.operation, trial=status.trial, value=status.trial_value,
                version=status.trial_version,
            )

    def operation_finished(self, status: OperationStatus) -> None:
        if self.quiet:
            return
        reason = _reason(status, self.exact)
        why = f"exact at trial {status.exact_trial}" if reason == EXACT else reason
        self.emit(
            "operation_done",
            f"{status.operation}: {status.finished} trials counted, best validation error "
            f"{_fmt(status.best_value)}; stopped: {why}",
            **_operation_fields(status), reason=reason,
            trial=status.exact_trial if reason == EXACT else None,
        )

    def warning(self, message: str) -> None:
        self.emit("warning", f"warning: {message}", message=message)

    def note(self, message: str, event: str = "note") -> None:
        if not self.warnings_only:
            self.emit(event, message, message=message)


def _operation_fields(status: OperationStatus) -> dict[str, object]:
    return {
        "operation": status.operation, "best": status.best_value, "counted": status.finished,
        "budget": status.budget,
    }


def make_reporter(
    log_format: str,
    campaign: str,
    *,
    live: bool | None = None,
    quiet: bool = False,
    timeout: float | None = None,
    exact: ExactLookup | None = None,
    names: Sequence[str] = (),
) -> LiveReporter | LogReporter:
    """The reporter for `--log-format` (text or json).

    `live` (default: whether stderr is a terminal) gives bars in text format; without it, log
    lines. `quiet` is for a worker of `run --workers K`: its parent shows the bars (then it
    prints warnings only) or the operations' lines (then it adds its trials and promotions).
    """
    json_lines = log_format == "json"
    live = _err.is_terminal if live is None else live
    if quiet:
        return LogReporter(
            campaign, json_lines=json_lines, quiet=True, warnings_only=live and not json_lines
        )
    if live and not json_lines:
        return LiveReporter(timeout=timeout, exact=exact, names=names)
    return LogReporter(campaign, json_lines=json_lines, exact=exact)


# -- tables (laid out by sweep.cli.text.print_table) -------------------------------------

_BEST_COLUMNS = (
    TableColumn("operation"),
    TableColumn("trial", drop=4, right=True),
    TableColumn("normalisation in/target", drop=6),
    TableColumn("architecture", own_line=True),
    TableColumn("learning rate", drop=9, right=True),
    TableColumn("MAE", drop=5, right=True),
    TableColumn("median rel. error", drop=8, right=True),
    TableColumn("hit rate", right=True),
    TableColumn("extrap. hit rate", right=True),
    TableColumn("extrap. median rel. error", drop=10, right=True),
)


def print_best_table(
    entries: Sequence[ModelEntry],
    operations: Sequence[Operation] | None,
    stopped_exact: Mapping[str, int] | None = None,
    *,
    console: Console | None = None,
) -> None:
    """Best model per operation; metrics on unseen in-range pairs and the extrapolation band.

    With `stopped_exact` (operation -> trial, from `sweep run`), a last column says which
    operations stopped at an exact model, and at which trial.
    """
    columns = list(_BEST_COLUMNS)
    if stopped_exact is not None:
        columns.append(TableColumn("stopped", drop=7))
    by_op = {e.operation: e for e in entries}
    names = [op.name for op in operations] if operations is not None else list(by_op)
    rows: list[list[str]] = []
    for name in names:
        entry = by_op.get(name)
        stopped = []
        if stopped_exact is not None:
            trial = stopped_exact.get(name)
            stopped = ["—" if trial is None else f"exact at trial {trial}"]
        if entry is None:
            rows.append([name, "—", "—", "no model yet", *["—"] * 6, *stopped])
            continue
        row = BestRow.from_entry(entry)
        rows.append([
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
        ])
    notes = []
    if len(rows) > len([n for n in names if n in by_op]):
        notes.append("no model yet: every trial of that operation was pruned or failed.")
    print_table(
        "Best model per operation (metrics on unseen inputs)", columns, rows,
        hint="`sweep best --format json` has every field", notes=notes, console=console,
    )


_HISTORY_COLUMNS = (
    TableColumn("operation"),
    TableColumn("version", right=True),
    TableColumn("best"),
    TableColumn("trial", drop=4, right=True),
    TableColumn("validation objective", drop=1, right=True),
    TableColumn("hit rate", right=True),
    TableColumn("extrap. hit rate", right=True),
    TableColumn("size (bytes)", drop=6, right=True),
    TableColumn("sha256", drop=5),
    TableColumn("created (UTC)", drop=2),
)


def print_history(entries: Sequence[ModelEntry], *, console: Console | None = None) -> None:
    rows = [
        [
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
        ]
        for e in entries
    ]
    print_table(
        "Registry history", _HISTORY_COLUMNS, rows,
        hint="`sweep models --format json` has every field", console=console,
    )
