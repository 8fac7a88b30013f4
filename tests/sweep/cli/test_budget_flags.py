"""`sweep run`'s budget flags: `--timeout` alone has no trial cap; stop when exact, or not."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from storage import ModelEntry
from sweep.cli.campaigns import build_config
from sweep.cli.display import print_best_table
from sweep.cli.main import build_parser
from sweep.problem.operations import resolve_operations


def _config(argv: list[str], tmp_path: Path, file: str | None = None) -> tuple[object, ...]:
    if file is not None:
        path = tmp_path / "campaign.toml"
        path.write_text(file)
        argv = [*argv, "--config", str(path)]
    config = build_config(build_parser().parse_args(["run", *argv]), "arith")
    return config.trials, config.timeout, config.stop_when_exact


@pytest.mark.parametrize(
    ("argv", "file", "expected"),
    [
        ([], None, (20, None, True)),
        (["--timeout", "60"], None, (None, 60.0, True)),
        (["--trials", "5"], None, (5, None, True)),
        (["--trials", "5", "--timeout", "60"], None, (5, 60.0, True)),
        # The file's trials stay with a --timeout flag; its timeout alone has no cap either.
        (["--timeout", "60"], "[campaign]\ntrials = 7\n", (7, 60.0, True)),
        ([], "[campaign]\ntimeout = 30\n", (None, 30.0, True)),
        (["--trials", "5"], "[campaign]\ntimeout = 30\n", (5, 30.0, True)),
        (["--no-stop-when-exact"], None, (20, None, False)),
        ([], "[campaign]\nstop_when_exact = false\n", (20, None, False)),
        (["--stop-when-exact"], "[campaign]\nstop_when_exact = false\n", (20, None, True)),
        (["--stop-when-exact", "--no-stop-when-exact"], None, (20, None, False)),  # the last
    ],
)
def test_run_flags_and_file_give_the_budget(
    argv: list[str], file: str | None, expected: tuple[object, ...], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SWEEP_CAMPAIGN", raising=False)
    assert _config(argv, tmp_path, file) == expected


def test_a_worker_s_file_decides_stop_when_exact(tmp_path: Path) -> None:
    """`sweep worker --config` has no budget flags (it blanks them, as worker.py does)."""
    path = tmp_path / "campaign.toml"
    path.write_text("[campaign]\nstop_when_exact = false\ntimeout = 9\n")
    args = build_parser().parse_args(["worker", "--config", str(path)])
    args.ops = args.trials = args.timeout = args.seed = args.sampler = args.pruner = None
    args.expr = []
    config = build_config(args, "arith")
    assert (config.trials, config.timeout, config.stop_when_exact) == (None, 9, False)


def test_run_help_names_both_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    out = capsys.readouterr().out
    assert "--stop-when-exact, --no-stop-when-exact" in out


def _entry(operation: str, trial: int) -> ModelEntry:
    metrics = {"val_hit_rate": 1.0, "test_hit_rate": 1.0, "extrapolation_hit_rate": 1.0}
    return ModelEntry(
        campaign="arith", operation=operation, version=1, study_name=f"arith.{operation}",
        trial_number=trial, objective_value=0.0, metrics=metrics, params={}, size_bytes=1,
        sha256="0" * 64, keras_version="", tensorflow_version="",
        created_at=datetime(2026, 1, 1), is_best=True,
    )


def test_the_result_table_says_which_operations_stopped_exact(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # every column fits
    operations = resolve_operations(("add", "multiply", "square"), {})
    entries = [_entry("add", 4), _entry("multiply", 11)]
    print_best_table(entries, operations, stopped_exact={"add": 4})
    out = capsys.readouterr().out
    assert "stopped" in out and "exact at trial 4" in out
    names = ("add", "multiply", "square")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(names)}
    assert "exact at trial" not in lines["multiply"] and "—" in lines["multiply"]
    assert "no model yet" in lines["square"]
    # Without the mapping (another caller), no column.
    print_best_table(entries, operations)
    assert "stopped" not in capsys.readouterr().out
