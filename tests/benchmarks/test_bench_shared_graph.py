"""The shared-graph benchmark for real at its smallest."""

from __future__ import annotations

import pytest
from _bench_markdown import rows

from benchmarks.shared_graph import WAYS, compare, draw_specs, render

pytestmark = pytest.mark.slow


def test_specs_are_the_default_spaces_mlps_and_repeat_from_the_seed() -> None:
    specs = draw_specs(40, seed=3)
    assert specs == draw_specs(40, seed=3) and specs != draw_specs(40, seed=4)
    assert {len(s.hidden_layers) for s in specs} == {0, 1, 2, 3}
    assert all(s.family == "mlp" and min(s.hidden_layers, default=2) >= 2 for s in specs)


@pytest.mark.timeout(600)
def test_every_way_trains_the_same_sequence_in_a_thread_of_its_own() -> None:
    runs = compare(trials=3, rounds=1, seed=1)
    assert [r.way for r in runs] == list(WAYS)
    assert all(len(r.seconds) == 3 and min(r.seconds) > 0 for r in runs)
    structures = len({(len(s.hidden_layers), s.activation if s.hidden_layers else "linear",
                       s.loss, s.lr_schedule) for s in draw_specs(3, seed=1)})
    assert [r.structures for r in runs] == [0, structures, structures]
    table = "\n".join(render(runs))
    assert rows(table, "per model")[0][3] == "1.00x"
