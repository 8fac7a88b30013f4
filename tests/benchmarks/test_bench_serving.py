"""Section 7 for real in quick mode: `sweep serve` under each client setting, `sweep predict`,
the in-process predictors, small requests during a 200,000-instance one (both settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench_markdown import is_number, rows

from benchmarks.serving import render_section, run_serving, target_lines

# A real run of the benchmark on a tiny budget: the slow tier (the renderers are tested on a
# recorded run in test_bench_report.py).
pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_the_service_and_the_in_process_predictors(tmp_path: Path) -> None:
    result = run_serving(tmp_path, quick=True)

    assert result.backend and result.ready_seconds > 0 and result.predict_seconds > 0
    python = [s for s in result.serve if s.client == "python"]
    assert [(s.clients, s.pairs) for s in python] == [(1, 1), (8, 1), (1, 10_000), (8, 10_000)]
    assert result.in_process
    section = "\n".join(render_section(result))
    served = rows(section, "`sweep serve` (python client)")
    assert len(served) == 4 and all(is_number(row[4].split()[0]) for row in served), served
    assert [r.threads for r in result.loaded] == [0, 2]
    assert all(r.idle_p99_ms > 0 and r.loaded_p99_ms > 0 for r in result.loaded)
    loaded = rows(section, "worker threads + a process for large bodies (`--threads 2`, the "
                  "default)")
    assert len(loaded) == 1 and loaded[0][7].endswith("x"), loaded
    assert len(target_lines(result)) == 3
