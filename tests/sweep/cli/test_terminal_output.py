"""What the CLI shows (issue 28): tables that fit the terminal without breaking a word, progress
bars that end on why an operation stopped, and log lines (text or JSON) off a terminal."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime

import pytest
from rich.cells import cell_len
from rich.console import Console

from storage import ModelEntry
from sweep.cli.display import (
    LOG_KEYS,
    LiveReporter,
    LogReporter,
    make_reporter,
    print_best_table,
    print_history,
)
from sweep.cli.main import build_parser
from sweep.problem.operations import resolve_operations
from sweep.search.reporting import BUDGET_MET, EXACT, TIME_UP, OperationStatus

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")

LONG_NAME = "resistance_of_parallel_resistors"  # 32 characters, the longest name allowed
TEN_INPUTS = (
    "10-F6-1 formula(deg 3, functions): 6.674e-11*m1*m2*q1*q2/(r1*r2) + "
    "0.5*v1*v2*v3*v4"
)
ARCHITECTURES = {
    "add": "2-1 linear",
    "multiply": "2-16-8-1 tanh",
    "gas": "4-P14-1 power(deg 2 of 4, neg, half)",
    "parallel": "2-F6-1 formula(deg 3, functions): (1/R1 + 1/R2)**-1",
    LONG_NAME: TEN_INPUTS,
}


def _entry(operation: str, trial: int = 7, version: int = 3) -> ModelEntry:
    metrics = {
        "test_mae": 1.234567e-05, "test_median_relative_error": 3.2e-07,
        "test_hit_rate": 0.9876, "extrapolation_hit_rate": 0.5,
        "extrapolation_median_relative_error": 1.5e-3,
    }
    params = {
        "architecture": ARCHITECTURES[operation], "input_normalization": "log_abs",
        "target_normalization": "log_abs", "learning_rate": 0.00123,
    }
    return ModelEntry(
        campaign="arith", operation=operation, version=version, study_name=f"arith.{operation}",
        trial_number=trial, objective_value=1.2345678e-05, metrics=metrics, params=params,
        size_bytes=123456, sha256="ab" * 32, keras_version="", tensorflow_version="",
        created_at=datetime(2026, 1, 1, 12, 30), is_best=True,
    )


def _console(width: int) -> Console:
    return Console(width=width, record=True, file=io.StringIO())


def _assert_fits(text: str, width: int, shown: Mapping[str, Sequence[str]]) -> list[str]:
    """No line wider than `width`; every word of every cell of `shown` (header -> cells) whole
    on one line, unless the note under the table names its column as left out."""
    lines = text.splitlines()
    assert lines
    too_wide = [line for line in lines if cell_len(line.rstrip()) > width]
    assert not too_wide, text
    flat = " ".join(" ".join(lines).split())
    left_out = flat.split("Not shown at ")[1].split(": ", 1)[1] if "Not shown" in flat else ""
    for header, cells in shown.items():
        if header in left_out:
            continue
        for cell in cells:
            for word in cell.split():
                assert any(word in line for line in lines), (word, text)
            assert " ".join(cell.split()) in flat, (cell, text)  # in order, maybe wrapped
    return lines


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize(
    "names", [("add", "multiply"), ("add", "multiply", "gas", "parallel", LONG_NAME)],
    ids=["short", "long"],
)
def test_the_best_table_fits_the_width_and_breaks_no_word(
    width: int, names: tuple[str, ...]
) -> None:
    console = _console(width)
    entries = [_entry(name) for name in names]
    print_best_table(entries, None, stopped_exact={"add": 7}, console=console)
    text = console.export_text()
    lines = _assert_fits(text, width, {
        "operation": names,
        "architecture": [ARCHITECTURES[name] for name in names],
        "stopped": ["exact at trial 7"],
        "MAE": ["1.235e-05"],
        "extrap. median rel. error": ["0.0015"],
    })
    if names == ("add", "multiply"):
        # Short rows are a table, one line per row, at 80 columns too.
        for name in names:
            rows = [line for line in lines if line.startswith(f"{name} ")]
            assert len(rows) == 1 and ARCHITECTURES[name] in rows[0], text


def test_the_short_table_at_80_columns_leaves_out_columns_and_says_which() -> None:
    console = _console(80)
    print_best_table([_entry("add"), _entry("multiply")], None, console=console)
    text = console.export_text()
    assert "hit rate" in text and "architecture" in text
    assert "Not shown at 80 columns:" in text and "learning rate" in text.split("Not shown")[1]
    wide = _console(250)
    print_best_table([_entry("add"), _entry("multiply")], None, console=wide)
    assert "Not shown" not in wide.export_text()


def test_a_row_too_long_for_a_table_is_stacked_with_every_field() -> None:
    console = _console(80)
    print_best_table([_entry(LONG_NAME)], None, console=console)
    lines = console.export_text().splitlines()
    assert LONG_NAME in lines
    text = "\n".join(lines)
    for label in ("architecture: ", "learning rate: 0.00123", "MAE: 1.235e-05",
                  "extrap. median rel. error: 0.0015", "normalisation in/target: log_abs/log_abs"):
        assert label in text, text


def test_an_operation_without_a_model_says_so() -> None:
    console = _console(80)
    operations = resolve_operations(("add", "square"), {})
    print_best_table([_entry("add")], operations, stopped_exact={}, console=console)
    text = console.export_text()
    assert "no model yet" in text
    _assert_fits(text, 80, {"operation": ["square"], "architecture": ["no model yet"]})


@pytest.mark.parametrize("width", [80, 120])
def test_the_history_table_fits_the_width(width: int) -> None:
    console = _console(width)
    entries = [_entry(name, version=v) for v, name in enumerate(ARCHITECTURES, 1)]
    print_history(entries, console=console)
    text = console.export_text()
    _assert_fits(text, width, {
        "operation": list(ARCHITECTURES),
        "created (UTC)": ["2026-01-01 12:30:00"],
        "validation objective": ["1.23457e-05"],
        "sha256": ["abababababab"],
    })


def test_tables_off_a_terminal_follow_columns(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    print_best_table([_entry(name) for name in ARCHITECTURES], None)
    out = capsys.readouterr().out
    assert max(cell_len(line.rstrip()) for line in out.splitlines()) <= 80


def _status(operation: str = "add", **fields: object) -> OperationStatus:
    status = OperationStatus(operation, f"arith.{operation}", 0, 20, None)
    for key, value in fields.items():
        setattr(status, key, value)
    return status


def _bars(reporter: LiveReporter) -> list[str]:
    console = reporter.console
    console.print(reporter.progress.make_tasks_table(reporter.progress.tasks))
    return console.export_text().splitlines()


def test_progress_bars_fit_80_columns_show_an_eta_and_end_on_why() -> None:
    endings = {"add": EXACT, "multiply": BUDGET_MET, LONG_NAME: TIME_UP}
    reporter = LiveReporter(timeout=60.0, console=_console(80), names=[*endings, "square"])
    for name in [*endings, "square"]:
        reporter.operation_started(_status(name))
        reporter.trial_finished(
            _status(name, finished=3, best_value=0.25, trial=2, trial_state="PRUNED")
        )
    for name, reason in endings.items():
        done = _status(name, finished=20 if reason == BUDGET_MET else 3, best_value=0.125,
                       stopped=reason, done=True)
        reporter.operation_finished(done)
    lines = _bars(reporter)
    assert all(cell_len(line.rstrip()) <= 80 for line in lines), lines
    by_name = {line.split()[0]: line.rstrip() for line in lines}
    assert by_name["add"].endswith(" exact") and "3/20" in by_name["add"]
    assert by_name["multiply"].endswith(" budget met") and "20/20" in by_name["multiply"]
    assert by_name[LONG_NAME].endswith(" time up")  # the whole name, at 80 columns too
    assert "pruned" not in "\n".join(lines)
    assert "best 0.125" in by_name["add"]
    # Still running: an ETA, at most the timeout's remaining minute.
    assert re.search(r"ETA 0:0[01]:\d\d$", by_name["square"]), by_name["square"]


def test_the_eta_without_a_timeout_comes_from_the_pace() -> None:
    reporter = LiveReporter(console=_console(100), names=["add"])
    reporter.operation_started(_status())
    assert _bars(reporter)[-1].rstrip().endswith("ETA ?")
    reporter.trial_finished(_status(finished=1, trial=0, trial_state="COMPLETE"))
    line = _bars(reporter)[-1].rstrip()
    assert re.search(r"ETA \d+:\d\d:\d\d$", line) and re.search(r" 0:00:0\d ", line), line


def test_a_status_read_from_the_study_gets_its_reason_from_the_registry_and_counts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The parent of `run --workers K` reads the studies: no reason of its own."""
    reporter = LogReporter("arith", exact=lambda op: 4 if op == "add" else None)
    reporter.operation_finished(_status("add", finished=5, done=True))
    reporter.operation_finished(_status("multiply", finished=20, done=True))
    reporter.operation_finished(_status("square", finished=3, done=True))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("add: 5 trials counted, best validation error —; stopped: exact at "
                             "trial 4")
    assert lines[1].endswith("stopped: budget met") and lines[2].endswith("stopped: time up")


def test_log_lines_are_timestamped_one_per_trial_and_promotion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = LogReporter("arith")
    reporter.operation_started(_status())
    reporter.trial_finished(_status(finished=1, best_value=0.5, trial=0, trial_state="COMPLETE",
                                    trial_value=0.5, trial_version=1))
    reporter.trial_finished(_status(finished=2, best_value=0.5, trial=1, trial_state="PRUNED"))
    reporter.trial_finished(_status(finished=2))  # a look at the study: no line
    reporter.warning("add: trial failed: boom")
    reporter.operation_finished(_status(finished=2, best_value=0.5, stopped=BUDGET_MET))
    lines = capsys.readouterr().err.splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    texts = [STAMP.sub("", line) for line in lines]
    assert texts == [
        "add: started; 0/20 trials counted, best validation error —",
        "add: trial 0 complete, validation error 0.5; 1/20 counted, best 0.5",
        "add: trial 0 promoted, registry version 1",
        "add: trial 1 pruned; 2/20 counted, best 0.5",
        "warning: add: trial failed: boom",
        "add: 2 trials counted, best validation error 0.5; stopped: budget met",
    ]


def test_a_quiet_worker_logs_its_trials_but_not_the_operations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = make_reporter("text", "arith", live=False, quiet=True)
    reporter.operation_started(_status())
    reporter.trial_finished(_status(finished=1, trial=0, trial_state="COMPLETE"))
    reporter.operation_finished(_status(finished=1, stopped=EXACT, exact_trial=0))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "add: trial 0 complete" in lines[0]
    # Under its parent's live bars: warnings only.
    under_bars = make_reporter("text", "arith", live=True, quiet=True)
    under_bars.trial_finished(_status(finished=1, trial=0, trial_state="COMPLETE"))
    under_bars.warning("w")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("warning: w")


def test_json_lines_have_the_stable_keys(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = make_reporter("json", "arith", live=True)  # asked for: JSON on a terminal too
    assert isinstance(reporter, LogReporter)
    name = "evil\x1b[2J"
    reporter.note("campaign ...", event="campaign")
    reporter.operation_started(_status(name))
    reporter.trial_finished(_status(name, finished=1, best_value=0.5, trial=0,
                                    trial_state="COMPLETE", trial_value=0.5, trial_version=2))
    reporter.warning("careful")
    reporter.operation_finished(_status(name, finished=1, stopped=EXACT, exact_trial=0))
    out = capsys.readouterr().err
    assert "\x1b" not in out
    records = [json.loads(line) for line in out.splitlines()]
    assert all(list(record) == list(LOG_KEYS) for record in records)
    assert [r["event"] for r in records] == [
        "campaign", "operation_started", "trial", "promoted", "warning", "operation_done",
    ]
    trial, promoted, done = records[2], records[3], records[5]
    assert trial["operation"] == name and trial["campaign"] == "arith"
    assert (trial["trial"], trial["state"], trial["value"], trial["counted"]) == (
        0, "COMPLETE", 0.5, 1
    )
    assert (promoted["trial"], promoted["version"]) == (0, 2)
    assert (done["reason"], done["trial"]) == ("exact", 0)
    assert STAMP.match(records[0]["time"] + " ")


@pytest.mark.parametrize("command", ["run", "worker"])
def test_log_format_is_an_option_of_run_and_worker(command: str) -> None:
    assert build_parser().parse_args([command]).log_format == "text"
    assert build_parser().parse_args([command, "--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--log-format", "xml"])
