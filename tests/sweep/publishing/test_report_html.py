"""The report's page from hand-made sections: no database, so every branch of the page is cheap."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sweep.problem.data import DataSpec
from sweep.problem.operations import BUILTIN_OPERATIONS, make_operation, make_table_operation
from sweep.problem.sampling import Bounds
from sweep.publishing.plots import HistoryPoint
from sweep.publishing.report_data import (
    CampaignReport,
    Extrapolation,
    Importances,
    NormalisationGrid,
    Section,
    StudyFacts,
)
from sweep.publishing.report_html import render_report
from sweep.publishing.summary import BestRow

PNG = b"\x89PNG\r\n\x1a\nnot really"
COUNTS = {"complete": 2, "pruned": 1, "failed": 0, "running": 0, "waiting": 0}


def _best(operation: str) -> BestRow:
    return BestRow(
        operation=operation, campaign="c", study=f"c.{operation}", trial=4, version=2,
        sha256="0123456789abcdef", size_bytes=10,
        params={"learning_rate": 0.0123456, "architecture": "2-1 linear", "hidden_layers": []},
        validation_objective=0.5, mae=0.25, median_relative_error=None, max_absolute_error=None,
        hit_rate=1.0, count=40, extrapolation_mae=None, extrapolation_median_relative_error=None,
        extrapolation_max_absolute_error=None, extrapolation_hit_rate=0.5,
        extrapolation_count=40,
    )


def _section(name: str = "add", **changes: Any) -> Section:
    section = Section(
        name=name,
        operation=BUILTIN_OPERATIONS["add"],
        data=DataSpec(low=0, high=50),
        inputs=(Bounds("a", "integer", 0, 50, 50, 100), Bounds("b", "integer", 0, 50, 50, 100)),
        problems=[],
        study=StudyFacts(f"c.{name}", "validation mae", 3, COUNTS),
        history=[HistoryPoint(0, "COMPLETE", 2.0), HistoryPoint(1, "COMPLETE", 1.0),
                 HistoryPoint(2, "PRUNED", 3.0)],
        normalisation=NormalisationGrid({("none", "none"): 1.0}, {("log", "none"): "diverged"},
                                        ["none", "log"], ["none"]),
        importances=Importances(3, {"learning_rate": 0.75, "batch_size": 0.25}),
        best=_best(name),
        extrapolation=Extrapolation(png=PNG, pairs=40),
    )
    return replace(section, **changes)


def _report(*sections: Section) -> CampaignReport:
    return CampaignReport("c", "sqlite:///x.db", "9.9", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                          list(sections))


def _body(text: str, name: str) -> str:
    found = re.search(rf'<section id="op-{re.escape(name)}">(.*?)</section>', text, re.S)
    assert found is not None, name
    return found.group(1)


def test_a_full_section_has_its_facts_figures_and_recipe() -> None:
    text = render_report(_report(_section()))
    assert "generated 2026-01-02 03:04:05 UTC · optuna 9.9" in text
    section = _body(text, "add")
    assert "c.add: 3 trials (2 complete, 1 pruned)" in section  # empty states left out
    assert "a, b in [0, 50), 10000 examples, seed 0; extrapolation band [50, 100)" in section
    assert "registry version 2 from trial 4: 2-1 linear" in section
    assert "learning rate 0.0123" in section and "none (linear model)" in section
    for alt in ("optimisation history", "best validation error per normalisation scheme",
                "parameter importances", "predicted vs true on the extrapolation band"):
        assert f'alt="{alt}"' in section
    assert "40 pairs from the extrapolation band [50, 100)" in section
    assert "Caution" not in section
    assert '<td class="num">0.25</td>' in text.split('<table class="best">', 1)[1]


def test_every_missing_piece_is_a_note_not_a_figure() -> None:
    sections = [
        _section("few", importances=Importances(2), best=None),
        _section("broken", importances=Importances(5, error="no variance"),
                 extrapolation=Extrapolation(load_error="bad checksum")),
        _section("flat", importances=Importances(5, {"learning_rate": 0.0}), normalisation=None,
                 extrapolation=Extrapolation(png=PNG, pairs=3, fingerprint_mismatch=True)),
        _section("nodata", data=None, inputs=(), extrapolation=Extrapolation(unknown_data=True)),
        _section("empty", study=StudyFacts("c.empty", "objective", 0, dict.fromkeys(COUNTS, 0)),
                 history=[], normalisation=None, importances=None),
        _section("nostudy", study=None, history=[], normalisation=None, importances=None),
    ]
    text = render_report(_report(*sections))
    few = _body(text, "few")
    assert "need at least 3 complete trials; this study has 2" in few
    assert "No model in the registry" in few and "Hyperparameters" not in few
    assert "could not be computed: no variance" in _body(text, "broken")
    assert "The model could not be loaded: bad checksum" in _body(text, "broken")
    flat = _body(text, "flat")
    assert "all zero" in flat and "No trial reached a validation error" in flat
    assert "Caution: the rebuilt data differs" in flat
    assert "its data cannot be rebuilt" in _body(text, "nodata")
    assert "The study has no trials yet" in _body(text, "empty")
    assert "`sweep run` has not reached it" in _body(text, "nostudy")
    assert "no model yet" in text.split('<table class="best">', 1)[1]


def test_names_and_messages_are_escaped_and_the_password_masked() -> None:
    odd = _section("<b>x</b>", problems=["cannot reach postgresql://u:hunter2@db/s"])
    text = render_report(_report(odd), password="hunter2")
    assert "<b>x</b>" not in text and 'id="op-&lt;b&gt;x&lt;/b&gt;"' in text
    assert "hunter2" not in text and "postgresql://u:***@db/s" in text


GAS = (
    Bounds("n", "real", 1, 5, 5, 9),
    Bounds("R", "real", 8, 9, 9, 10),
    Bounds("T", "real", 250, 350, 350, 450),
    Bounds("V", "real", 1, 10, 10, 19),
)


def test_every_input_shows_its_range_and_band_for_many_inputs() -> None:
    gas = make_operation("gas", "n*R*T/V")
    text = render_report(_report(_section("gas", operation=gas, inputs=GAS)))
    section = _body(text, "gas")
    assert "10000 examples, seed 0" in section and "a, b in" not in section
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\w+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>",
                      section)
    assert rows == [("n", "real", "[1, 5)", "[5, 9)"), ("R", "real", "[8, 9)", "[9, 10)"),
                    ("T", "real", "[250, 350)", "[350, 450)"),
                    ("V", "real", "[1, 10)", "[10, 19)")]
    assert "40 rows from the extrapolation band of its 4 inputs" in section


def test_a_tables_ranges_are_closed_and_its_band_lies_above_them() -> None:
    table = make_table_operation("gas", ("n", "T"), "P", False)
    bounds = (Bounds("n", "integer", 1, 4, 4, 5), Bounds("T", "real", 250.5, 330, 330, 350))
    text = render_report(_report(_section("gas", operation=table, inputs=bounds)))
    section = _body(text, "gas")
    assert "every row of its table, seed 0" in section
    assert "<td>n</td><td>integer</td><td>[1, 4]</td><td>(4, 5]</td>" in section
    assert "<td>T</td><td>real</td><td>[250.5, 330]</td><td>(330, 350]</td>" in section
    assert "above the training range of at least one input" in section
    assert "40 pairs from the extrapolation band (n in (4, 5], T in (330, 350])" in section


def test_a_single_input_is_a_value_and_unknown_inputs_are_left_out() -> None:
    square = BUILTIN_OPERATIONS["square"]
    one = (Bounds("a", "integer", 0, 50, 50, 100),)
    text = render_report(_report(
        _section("square", operation=square, inputs=one),
        _section("blind", operation=None, inputs=()),
    ))
    square_section = _body(text, "square")
    assert "a in [0, 50), 10000 examples, seed 0; extrapolation band [50, 100)" in square_section
    assert "40 values from the extrapolation band [50, 100)" in square_section
    blind = _body(text, "blind")
    assert "<th>inputs</th>" not in blind and "10000 examples, seed 0" in blind
