"""Operations of many named inputs, real ranges and tables, as the publishing side shows them:
the rows an export is checked on, the study note, and the report's view of a study's record.
No model and no TensorFlow: each test takes well under a second."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna
import pytest

from storage import Database, ModelEntry
from sweep.nets.portable import default_probe
from sweep.problem.data import DataSpec, make_dataset
from sweep.problem.inputs import InputRange
from sweep.problem.operations import Operation, make_operation, make_table_operation
from sweep.problem.sampling import Bounds
from sweep.problem.tables import Table
from sweep.publishing.notes import study_note
from sweep.publishing.pulling import probe_inputs
from sweep.publishing.report_data import gather_report
from sweep.search.config import CampaignConfig

SPEC = DataSpec(examples=300, test_examples=50, extrapolation_examples=40)
GAS_RANGES = (
    InputRange("n", 1, 5, "real"),
    InputRange("R", 8, 9, "real"),
    InputRange("T", 250, 350, "real"),
    InputRange("V", 1, 10, "real"),
)


def _gas() -> Operation:
    return replace(make_operation("gas", "n*R*T/V"), ranges=GAS_RANGES, integer_valued=False)


def _table() -> Table:
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.uniform(1, 5, 200), rng.integers(1, 4, 200).astype(float)])
    return Table(("n", "k"), "P", x, x[:, 0] * x[:, 1] * 3.5)


def test_probe_rows_cover_the_test_rows_edges_and_band_of_every_input() -> None:
    op = _gas()
    dataset = make_dataset(op, SPEC)
    x = probe_inputs(op, SPEC)
    assert x.dtype == np.float64 and x.shape[1] == 4
    assert np.array_equal(x[: len(dataset.x_test)], dataset.x_test)
    assert np.array_equal(x[-len(dataset.x_extrapolation):], dataset.x_extrapolation)
    assert op.valid_rows(x).all()  # only rows in the domain
    rows = {tuple(row) for row in x.tolist()}
    assert (1.0, 8.0, 250.0, 1.0) in rows and (5.0, 9.0, 350.0, 10.0) in rows  # range corners
    assert (9.0, 10.0, 450.0, 19.0) in rows  # the far end of every band
    assert (0.0, 0.0, 0.0, 5.0) in rows and (0.0, 0.0, 0.0, -123.0) in rows  # zeros, V alone
    # n*R*T/V with V = 0 is undefined: no such row is compared.
    assert not (x[:, 3] == 0).any()


def test_a_table_is_probed_on_its_own_rows_and_without_them_on_the_generic_probe() -> None:
    table = _table()
    op = make_table_operation("gas", table.inputs, table.target, False)
    x = probe_inputs(op, SPEC, table)
    known = {tuple(row) for row in table.x.tolist()}
    dataset = make_dataset(op, SPEC, table)
    drawn = np.concatenate([dataset.x_test, dataset.x_extrapolation])
    assert {tuple(row) for row in drawn.tolist()} <= known
    assert len(x) > len(drawn) and (x == 0).all(axis=1).any()  # zeros too: no formula to judge
    assert np.array_equal(probe_inputs(op, SPEC), default_probe(2))


def _entry(operation: str, count: int) -> ModelEntry:
    metrics = {"test_mae": 0.5, "test_hit_rate": 0.25, "test_count": count,
               "extrapolation_mae": 2.0, "extrapolation_hit_rate": 0.0,
               "extrapolation_count": count}
    return ModelEntry(
        campaign="c", operation=operation, version=3, study_name=f"c.{operation}",
        trial_number=7, objective_value=0.5, metrics=metrics,
        params={"architecture": "4-8-1 tanh", "input_normalization": "standard"},
        sha256="ab" * 32, size_bytes=100, keras_version="", tensorflow_version="",
        created_at=datetime(2026, 1, 1), is_best=True,
    )


def test_the_study_note_lists_every_input_with_its_range_and_band() -> None:
    dataset = make_dataset(_gas(), SPEC)
    note = study_note(_entry("gas", 50), dataset)
    assert "| inputs | 4, in this order: `n, R, T, V` |" in note
    assert "| `n` | real | [1, 5) | [5, 9) |" in note
    assert "| `T` | real | [250, 350) | [350, 450) |" in note
    assert "| `V` | real | [1, 10) | [10, 19) |" in note
    assert "| unseen in-range rows (ranges above) |" in note
    assert "A hit: relative error ≤ 1e-6." in note


def test_the_study_note_of_the_original_setting_reads_as_before() -> None:
    dataset = make_dataset(make_operation("mix", "a*b+a"), DataSpec(low=0, high=50))
    note = study_note(_entry("mix", 40), dataset)
    assert "unseen in-range pairs, a, b in [0, 50)" in note
    assert "extrapolation band, a, b in [50, 100)" in note
    assert "| `a` | integer | [0, 50) | [50, 100) |" in note


def test_a_tables_note_shows_closed_ranges_and_the_rows_above_them() -> None:
    table = _table()
    op = make_table_operation("gas", table.inputs, table.target, False)
    note = study_note(_entry("gas", 20), make_dataset(op, SPEC, table))
    assert "| `k` | integer | [1, 3] | none above 3 |" in note
    assert "From a table of 200 rows" in note
    assert "| extrapolation rows (above the training range of an input) |" in note


@pytest.fixture
def recorded(tmp_path: Path) -> str:
    """Studies with their records but no stored campaign (another tool wrote them, or the
    campaign's row is gone): the report rebuilds each operation from its record."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    storage = optuna.storages.RDBStorage(url)
    data = SPEC.to_dict()
    gas = optuna.create_study(study_name="t.gas", storage=storage)
    for key, value in {
        "expression": "n*R*T/V", "inputs": ["n", "R", "T", "V"], "integer_valued": False,
        "ranges": [[r.name, r.kind, r.low, r.high, *r.band] for r in GAS_RANGES], "data": data,
    }.items():
        gas.set_user_attr(key, value)
    table = optuna.create_study(study_name="t.rows", storage=storage)
    table.set_user_attr("expression", None)
    table.set_user_attr("inputs", ["n", "k"])
    table.set_user_attr("ranges", [["n", "real", 1.0, 4.5, 4.5, 5.0],
                                   ["k", "integer", 1, 3, 3, 3]])
    table.set_user_attr("data", data)
    mix = optuna.create_study(study_name="t.mix", storage=storage)
    mix.set_user_attr("expression", "a*b+a")
    mix.set_user_attr("inputs", ["a", "b"])
    mix.set_user_attr("ranges", [["a", "integer", 0, 500, 500, 1000],
                                 ["b", "integer", 0, 500, 500, 1000]])
    mix.set_user_attr("data", DataSpec().to_dict())
    storage.remove_session()
    storage.engine.dispose()
    return url


def test_without_a_campaign_the_report_rebuilds_operations_from_their_record(
    recorded: str,
) -> None:
    sections = {s.name: s for s in gather_report(Database(recorded), "t").sections}
    gas = sections["gas"]
    assert gas.operation is not None and gas.operation.inputs == ("n", "R", "T", "V")
    assert gas.operation.ranges == tuple(
        replace(r, extrapolation=r.band) for r in GAS_RANGES
    )
    assert gas.operation.integer_valued is False
    assert gas.inputs == tuple(Bounds(r.name, r.kind, r.low, r.high, *r.band)
                               for r in GAS_RANGES)
    assert gas.band is None  # each input has its own
    # Its data rebuild as the campaign drew them: the ranges, not integers in [0, 500).
    rebuilt = make_dataset(gas.operation, SPEC)
    assert rebuilt.fingerprint == make_dataset(_gas(), SPEC).fingerprint
    rows = sections["rows"]
    assert rows.operation is not None and rows.operation.table
    assert rows.operation.description == "a table of n, k"
    assert [b.name for b in rows.inputs] == ["n", "k"] and not rows.problems
    # The original setting stays implicit: the original generator rebuilds its data.
    mix = sections["mix"]
    assert mix.operation is not None and mix.operation.ranges == ()
    assert mix.band == (500, 1000)


def test_an_operation_the_campaign_no_longer_lists_is_resolved_by_the_campaign(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = CampaignConfig(
        name="t", operations=("gas",), expressions={"gas": "n*R*T/V"},
        inputs={"gas": {r.name: r for r in GAS_RANGES}}, data=SPEC,
    )
    with Database(url) as database:
        database.campaigns.save("t", config.to_dict())
    storage = optuna.storages.RDBStorage(url)
    optuna.create_study(study_name="t.add", storage=storage)  # from an earlier run
    optuna.create_study(study_name="t.gas", storage=storage)
    storage.remove_session()
    storage.engine.dispose()
    sections = {s.name: s for s in gather_report(Database(url), "t").sections}
    add = sections["add"]
    assert add.operation is not None and add.operation.integer_valued  # decided from data
    assert [(r.name, r.low, r.high, r.legacy) for r in add.operation.ranges] == [
        ("a", 0, 500, True), ("b", 0, 500, True)
    ]
    assert add.band == (500, 1000) and not add.problems
    gas = sections["gas"]
    assert gas.operation is not None and gas.operation.ranges == GAS_RANGES
    assert [(b.name, b.low, b.band_high) for b in gas.inputs] == [
        ("n", 1, 9), ("R", 8, 10), ("T", 250, 450), ("V", 1, 19)
    ]
