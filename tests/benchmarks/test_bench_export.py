"""The export a promotion pays, for real: one save and safe reload."""

from __future__ import annotations

from benchmarks.export import export_milliseconds


def test_one_export_is_timed() -> None:
    assert export_milliseconds(1) > 0
