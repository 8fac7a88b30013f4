"""What every section's renderer shares: Markdown tables, number formats, fair comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["beats", "fraction", "percent", "ratio", "significant", "table", "times"]


def significant(value: float | None, digits: int = 3) -> str:
    """`value` to `digits` significant digits; — when missing (None or NaN), ∞ when infinite."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}g}"


def fraction(value: float) -> str:
    """A fraction such as a hit rate, to three decimals; — when missing."""
    return "—" if math.isnan(value) else f"{value:.3f}"


def percent(value: float) -> str:
    """A share as a percentage to one decimal; — when missing."""
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"


def times(value: float) -> str:
    """A ratio as a multiple, such as 1.83x; — when missing."""
    return "—" if math.isnan(value) else f"{value:.2f}x"


def ratio(ours: float, baseline: float) -> float:
    """ours / baseline; below 1 means ours is better. 0/0 (both exact) is 1: a tie."""
    if math.isnan(ours) or math.isnan(baseline):
        return math.nan
    if baseline == 0:
        return 1.0 if ours == 0 else math.inf
    return ours / baseline


def beats(ours: float, baseline: float) -> bool:
    """Strictly better, or both exactly 0 (nothing left to beat)."""
    if math.isnan(ours) or math.isnan(baseline):
        return False
    return ours < baseline or ours == baseline == 0


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the header, its rule, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
