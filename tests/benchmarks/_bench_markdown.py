"""Reading the benchmark report in tests: table rows by their first cell, cells as numbers, and
the recorded quick run (tests/benchmarks/recorded/)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.report import Results

RECORDED = Path(__file__).resolve().parent / "recorded"
# One real quick run with every section (PostgreSQL up), recorded with
# `python -m benchmarks --quick --save-results tests/benchmarks/recorded/quick.json`; the
# formulas section (10), added later, from its own quick run (`--sections formulas`), its
# results and section load copied in; so is the formula-methods section (12), from
# `--sections formula-methods --quick`, the throughput section (13), from
# `--sections throughput --quick`, and the packing section (14), from `--sections packing --quick`.
QUICK_RUN = RECORDED / "quick.json"


def recorded_quick_run() -> Results:
    """The recorded quick run's results, as the run measured them."""
    return Results.from_json(QUICK_RUN.read_text(encoding="utf-8"))


def rows(report: str, first_cell: str) -> list[list[str]]:
    """Cells of every Markdown table row whose first cell is `first_cell`."""
    found = []
    for line in report.splitlines():
        if line.startswith(f"| {first_cell} |"):
            found.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return found


def number(cell: str) -> float:
    """A cell as a number: plain, scientific, a percentage or a ratio like 2.3x."""
    text = cell.strip().rstrip("%x").replace("∞", "inf")
    return float(text)


def is_number(cell: str) -> bool:
    try:
        return not math.isnan(number(cell))
    except ValueError:
        return False
