"""The flat-cost and TPE-window benchmarks for real at their smallest."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from _bench_markdown import rows

from benchmarks import tpe_window
from benchmarks.flat_cost import measure, render
from benchmarks.overhead import PARTS, WINDOW

pytestmark = pytest.mark.slow


def test_sizes_take_turns_and_each_study_grows_by_a_window() -> None:
    with tempfile.TemporaryDirectory() as folder:
        urls = {s: f"sqlite:///{Path(folder) / f'{s}.db'}" for s in (WINDOW, 2 * WINDOW)}
        costs = measure(urls, "SQLite", rounds=2)
    assert [(c.size, len(c.trial_ms)) for c in costs] == [(WINDOW, 2), (2 * WINDOW, 2)]
    assert all(ms > 0 for c in costs for ms in c.trial_ms)
    assert all(set(c.parts_ms) == set(PARTS) for c in costs)
    table = "\n".join(render(costs))
    assert rows(table, "SQLite")[0][4] == "1.00x"


def test_the_window_and_the_whole_study_run_the_same_seeds() -> None:
    runs = tpe_window.compare(trials=110, seeds=1)
    assert {(r.function, r.sampler) for r in runs} == {
        (f, s) for f in tpe_window.FUNCTIONS for s in ("window", "whole")
    }
    # Identical below the window (100 finished trials): the best at 100 agrees.
    for function in tpe_window.FUNCTIONS:
        pair = [r.best_at[100] for r in runs if r.function == function]
        assert pair[0] == pair[1]
    assert "wins at 110" in "\n".join(tpe_window.render(runs, 110))
