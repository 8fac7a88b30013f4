"""The lazy-groups benchmark for real at its smallest."""

from __future__ import annotations

import pytest
from _bench_markdown import rows

from benchmarks.lazy_groups import SAMPLERS, measure, render

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def test_every_sampler_proposes_the_same_trials_and_the_table_says_so() -> None:
    runs = measure(trials=30, rounds=2)
    assert [r.sampler for r in runs[:3]] == list(SAMPLERS)
    assert [r.sampler for r in runs[3:]] == [*list(SAMPLERS)[1:], next(iter(SAMPLERS))]
    assert all(len(r.seconds) == 30 and min(r.seconds) > 0 for r in runs)
    # Past TPE's random start the made-up values lead it to the formula family.
    assert runs[0].families[8:].count("formula") > 11
    table = "\n".join(render(runs))
    assert rows(table, "Optuna's grouped TPE")[0][-1] == "1.00x"
    assert all(len(rows(table, name)) == 1 for name in SAMPLERS)
