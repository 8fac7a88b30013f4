"""The MLP step benchmark for real at its smallest."""

from __future__ import annotations

import math

import pytest
from _bench_markdown import rows

from benchmarks.mlp_step import CASES, WAYS, compare, main, render

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_every_way_times_a_trace_a_first_call_and_a_step() -> None:
    timings = compare(epochs=2, rounds=2, cases=CASES[:1])
    assert sorted((t.way, t.round) for t in timings) == sorted(
        (way, r) for way in WAYS for r in (1, 2))
    assert all(t.trace_ms > 0 and t.step_us > 0 and math.isfinite(t.first_call_ms)
               for t in timings)
    # The ways rotate: each goes first in some round.
    firsts = {timings[0].way, timings[len(WAYS)].way}
    assert len(firsts) == 2
    table = "\n".join(render(timings))
    assert [r[1] for r in rows(table, CASES[0].label)] == list(WAYS)
    assert rows(table, CASES[0].label)[0][5] == "1.00x"


def test_bounds_are_refused_with_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--epochs", "1"])
    assert exit_info.value.code == 2
    assert "--epochs must be 2-30" in capsys.readouterr().err
