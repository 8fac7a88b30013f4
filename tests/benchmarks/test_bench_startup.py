"""Section 6 for real at its smallest: every command once."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench_markdown import is_number, rows

from benchmarks.startup import COMMANDS, render_section, run_startup

# A real run of the benchmark on a tiny budget: the slow tier (the renderers are tested on a
# recorded run in test_bench_report.py).
pytestmark = pytest.mark.slow


def test_every_command_starts_once(tmp_path: Path) -> None:
    results = run_startup(tmp_path, 1)

    assert [r.command for r in results] == list(COMMANDS)
    assert all(r.runs == 1 and r.seconds > 0 and r.exit_code == 0 for r in results), results
    section = "\n".join(render_section(results))
    (row,) = rows(section, "`sweep best`")
    assert all(is_number(cell) for cell in row[1:5]), row
    assert "For scale: importing TensorFlow alone" in section
