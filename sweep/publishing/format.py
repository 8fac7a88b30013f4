"""One way to show a number to a person: the CLI tables, the study notes and the report."""

from __future__ import annotations

import math
from typing import Any


def format_value(value: Any, digits: int = 4) -> str:
    """``None`` -> an em dash, floats to `digits` significant digits, booleans as yes/no."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)
