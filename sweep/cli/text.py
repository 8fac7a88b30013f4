"""Printing user data safely: one line, control characters escaped, no markup; tables and
text laid out in the console's width.

Names, expressions, paths and registry strings reach the terminal through here, so an ANSI or
OSC-8 escape sequence stored in the database, or typed into a config file, is shown, not run.

A table (`print_table`) is laid out for the width the console reports (a terminal's; off a
terminal $COLUMNS, else 80): never wider, no cell wrapped and no word broken. Low-priority
columns are left out (and named under the table) when it does not fit; when it would lose
too many, each row is stacked into "label: value" lines instead. rich is imported only by the
functions that draw (`sweep --help` and argument parsing stay light).
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "TableColumn",
    "cell_len",
    "print_table",
    "print_wrapped",
    "safe",
    "say",
    "utc_timestamp",
    "wrap",
]

# C0 and C1 controls (ESC starts ANSI and OSC sequences, 0x9b is a one-byte CSI), DEL, and
# the Unicode bidirectional overrides that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(value: object) -> str:
    """`value` as one line of plain text a terminal shows as is (controls escaped)."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(escape, str(value))


def say(text: object, *, err: bool = False) -> None:
    """Print one line of (sanitised) text: the CLI's only way to print user data.

    Written and flushed at once, in one piece: in a pipe (`docker compose logs`) each line
    arrives when it is said, and lines of several processes sharing the stream do not mix.
    """
    stream = sys.stderr if err else sys.stdout
    stream.write(safe(text) + "\n")
    stream.flush()


def utc_timestamp(now: datetime.datetime | None = None) -> str:
    """ISO 8601 in UTC to the millisecond, e.g. ``2026-12-07T09:14:03.250Z``."""
    moment = now if now is not None else datetime.datetime.now(datetime.UTC)
    text = moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


# -- layout in the console's width ----------------------------------------------------

_GAP = 2  # spaces between two columns (box.SIMPLE_HEAD, no edges)
_MAX_LEFT_OUT = 4  # a table that would lose more columns is stacked instead


@dataclass(frozen=True)
class TableColumn:
    header: str
    drop: int = 0  # 0: always shown; the highest is left out first when the table is too wide
    own_line: bool = False  # stacked: first, on a line of its own (long values)
    right: bool = False


def _stdout() -> Console:
    from rich.console import Console

    # The terminal's width; off a terminal $COLUMNS, else 80 (rich's rules).
    return Console()


def _words(text: str) -> list[str]:
    return text.split() or [""]


def cell_len(text: str) -> int:
    """Terminal cells `text` takes (a CJK character takes two)."""
    from rich.cells import cell_len

    return cell_len(text)


def _fit(
    columns: Sequence[TableColumn], rows: Sequence[Sequence[str]], width: int
) -> list[int] | None:
    """Column widths that fit `width` with no cell wrapped and no word broken (headers may wrap
    at spaces); None when there are none."""
    need = [
        max([max(cell_len(w) for w in _words(col.header)), *(cell_len(r[i]) for r in rows)])
        for i, col in enumerate(columns)
    ]
    natural = [
        max([cell_len(col.header), *(cell_len(r[i]) for r in rows)])
        for i, col in enumerate(columns)
    ]
    spare = width - sum(need) - _GAP * (len(columns) - 1)
    if spare < 0:
        return None
    widths = list(need)
    # Unwrap whole headers, the cheapest first; what is left widens the rest from the left.
    order = sorted(range(len(widths)), key=lambda i: natural[i] - need[i])
    for whole in (True, False):
        for i in order:
            grow = natural[i] - widths[i]
            if grow <= spare or not whole:
                grow = min(grow, spare)
                widths[i] += grow
                spare -= grow
    return widths


def wrap(text: str, width: int, indent: str = "", hang: str = "") -> list[str]:
    """`text` in lines of at most `width` cells, broken at spaces. A word longer than a whole
    line is the one thing cut (nothing else would keep the line inside the terminal)."""
    lines: list[str] = []
    line = indent
    fresh = True
    for word in _words(text):
        if not fresh and cell_len(line) + 1 + cell_len(word) <= width:
            line += " " + word
            continue
        if not fresh:
            lines.append(line)
            line = hang
        while cell_len(line) + cell_len(word) > width and len(word) > 1:
            room = max(1, width - cell_len(line))
            lines.append(line + word[:room])
            line, word = hang, word[room:]
        line += word
        fresh = False
    lines.append(line)
    return lines


def _stacked(
    title: str, columns: Sequence[TableColumn], rows: Sequence[Sequence[str]], width: int
) -> list[str]:
    """Each row as a block: its first cell, then "label: value" items packed into lines."""
    lines = [*wrap(title, width, hang="  "), ""]
    for row in rows:
        lines += wrap(row[0], width)
        items = [
            (col, f"{col.header}: {cell}")
            for col, cell in zip(columns[1:], row[1:], strict=True)
            if cell and cell != "—"  # stacked, an empty value is left out
        ]
        items.sort(key=lambda item: not item[0].own_line)
        line = ""
        for col, item in items:
            if line and not col.own_line and cell_len(line) + 3 + cell_len(item) <= width:
                line += "   " + item
                continue
            if line:
                lines.append(line)
            wrapped = wrap(item, width, indent="  ", hang="      ")
            lines += wrapped[:-1]
            line = wrapped[-1]
            if col.own_line:
                lines.append(line)
                line = ""
        if line:
            lines.append(line)
        lines.append("")
    return lines[:-1]


def print_table(
    title: str,
    columns: Sequence[TableColumn],
    rows: Sequence[Sequence[object]],
    *,
    hint: str,
    notes: Sequence[str] = (),
    console: Console | None = None,
) -> None:
    """A table as wide as the console allows: all columns, else without the lowest-priority
    ones (named under it), else stacked rows."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console = console or _stdout()
    width = console.width
    cells = [[safe(value) for value in row] for row in rows]
    shown = list(range(len(columns)))
    while True:
        widths = _fit([columns[i] for i in shown], [[r[i] for i in shown] for r in cells], width)
        if widths is not None:
            break
        droppable = [i for i in shown if columns[i].drop > 0]
        if not droppable or len(columns) - len(shown) >= _MAX_LEFT_OUT:
            for line in _stacked(safe(title), columns, cells, width):
                console.print(Text(line), soft_wrap=True)
            print_wrapped(notes, console=console)
            return
        shown.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for i, w in zip(shown, widths, strict=True):
        col = columns[i]
        table.add_column(col.header, width=w, overflow="ellipsis",
                         justify="right" if col.right else "left")
    for row in cells:
        table.add_row(*(Text(row[i]) for i in shown))
    print_wrapped([title], console=console)
    console.print(table)
    left_out = [columns[i].header for i in range(len(columns)) if i not in shown]
    if left_out:
        notes = [*notes, f"Not shown at {width} columns: {', '.join(left_out)} ({hint})."]
    print_wrapped(notes, console=console)


def print_wrapped(lines: Sequence[str], *, console: Console | None = None) -> None:
    """Lines of text on stdout, each wrapped at spaces to the console's width."""
    from rich.text import Text

    if not lines:
        return
    console = console or _stdout()
    for text in lines:
        for line in wrap(safe(text), console.width, hang="  "):
            console.print(Text(line), soft_wrap=True)
