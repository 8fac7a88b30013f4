"""Reading many inputs for `sweep predict --input`: CSV (or whitespace-separated) numbers."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from sweep.errors import ConfigError

__all__ = ["MAX_INPUT_ROWS", "read_pairs"]

MAX_INPUT_ROWS = 1_000_000
_SEPARATOR = re.compile(r"\s*,\s*|\s+")
_HEADER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_pairs(source: str, arity: int) -> tuple[list[list[float]], list[int]]:
    """Rows of `arity` numbers from a file (or stdin for ``-``), and each row's line number.

    Blank lines and ``#`` comments are skipped, and a first line of names (``a,b``) is taken
    as a header. Every other line must hold exactly `arity` numbers.

    Raises:
        ConfigError: an unreadable file, or the first bad line (by number).
    """
    if source == "-":
        text = sys.stdin.read()
        shown = "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--input {source!r} is not a file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read --input {source!r}: {e}") from None
        shown = source
    rows: list[list[float]] = []
    numbers: list[int] = []
    header_allowed = True
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in _SEPARATOR.split(line) if f]
        if header_allowed and all(_HEADER.fullmatch(f) for f in fields):
            header_allowed = False
            continue
        header_allowed = False
        if len(fields) != arity:
            wanted = "one number" if arity == 1 else f"{arity} numbers"
            raise ConfigError(
                f"{shown} line {number}: expected {wanted}, got {len(fields)}: {line[:60]!r}"
            )
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise ConfigError(f"{shown} line {number}: {bad[:40]!r} is not a number") from None
        numbers.append(number)
        if len(rows) > MAX_INPUT_ROWS:
            raise ConfigError(
                f"{shown} has more than {MAX_INPUT_ROWS:_} inputs; split it into smaller files"
            )
    return rows, numbers


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
