"""Reading many inputs for `sweep predict --input`: CSV (or whitespace-separated) numbers.

A first line of names is a header: with the operation's input names known (`read_rows`) it
must name each input once, in any order, and the columns are taken by name; without a header
the columns are the inputs in the operation's order. A field in double quotes (``"n","R"``,
as R's ``write.csv`` and spreadsheets write them) is read without its quotes.

The input is read in blocks under bounds on its size and its lines' length, then parsed under
a bound on its rows: a runaway source (``--input - < /dev/zero``, a mistaken multi-gigabyte
file) is refused after a bounded read, never loaded whole.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import IO

from sweep.errors import ConfigError

__all__ = ["MAX_INPUT_BYTES", "MAX_INPUT_ROWS", "MAX_LINE_BYTES", "read_pairs", "read_rows"]

MAX_INPUT_ROWS = 1_000_000
# A million pairs written out in full (two 24-character floats and a separator) fit in 64 MiB.
MAX_INPUT_BYTES = 64 * 1024 * 1024
# Far beyond any line of numbers (or comment); a source without newlines stops here.
MAX_LINE_BYTES = 64 * 1024
_BLOCK_BYTES = 1024 * 1024
_SEPARATOR = re.compile(r"\s*,\s*|\s+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What str.splitlines ends a line at (CR LF together is one break).
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def read_pairs(source: str, arity: int) -> tuple[list[list[float]], list[int]]:
    """Rows of `arity` numbers from a file (or stdin for ``-``), and each row's line number.

    Blank lines and ``#`` comments are skipped, and a first line of names that are not
    numbers (``a,b``; ``nan,inf`` is a row) is taken as a header and skipped. Every other line
    must hold exactly `arity` numbers. At most `MAX_INPUT_BYTES` bytes, lines of at most
    `MAX_LINE_BYTES` bytes and `MAX_INPUT_ROWS` rows are read.

    Raises:
        ConfigError: an unreadable or oversized input, or the first bad line (by number).
    """
    return _read_source(source, _Columns(arity, None, None))


def read_rows(
    source: str, names: Sequence[str], operation: str = "the operation"
) -> tuple[list[list[float]], list[int]]:
    """Like `read_pairs` for an operation with these input `names`: a header line must name
    each input exactly once (any order) and the columns are mapped by name; without a header
    they are taken in `names` order. Each row comes back in `names` order.

    Raises:
        ConfigError: as `read_pairs`, or a header naming an unknown, repeated or missing input
            (one line naming it, its column and the inputs).
    """
    return _read_source(source, _Columns(len(names), tuple(names), operation))


@dataclass
class _Columns:
    """What the lines must hold: `arity` numbers; with `names`, a header is mapped by them."""

    arity: int
    names: tuple[str, ...] | None
    operation: str | None
    order: list[int] | None = None  # with a header: the column of each input, in names order
    header: tuple[str, ...] | None = None

    def header_fields(self, line: str, fields: list[str]) -> list[str] | None:
        """The first line's column names if it is a header: names that are not numbers
        (``nan,inf`` is a row). With the input names known, a name may be any text a table
        column may have (``Temp C``), separated by commas."""
        if self.names is not None and "," in line:
            named = [_unquoted(f.strip()) for f in line.split(",")]
            return named if all(f and not _is_float(f) for f in named) else None
        return fields if all(_is_name(f) for f in fields) else None

    def take_header(self, fields: list[str], shown: str, number: int) -> None:
        if self.names is None:
            return
        listing = ", ".join(self.names)
        seen: dict[str, int] = {}
        for column, name in enumerate(fields, start=1):
            if name not in self.names:
                raise ConfigError(
                    f"{shown} line {number}, column {column}: {name[:40]!r} is not an input of "
                    f"{self.operation} (its inputs: {listing})"
                )
            if name in seen:
                raise ConfigError(
                    f"{shown} line {number}, column {column}: {name!r} is named twice (also "
                    f"column {seen[name]}); name each of {listing} once"
                )
            seen[name] = column
        missing = [name for name in self.names if name not in seen]
        if missing:
            raise ConfigError(
                f"{shown} line {number}: the header has no column for {', '.join(missing)} "
                f"(the inputs of {self.operation}: {listing})"
            )
        self.header = tuple(fields)
        order = [seen[name] - 1 for name in self.names]
        self.order = None if order == list(range(self.arity)) else order

    def wanted(self) -> str:
        count = "one number" if self.arity == 1 else f"{self.arity} numbers"
        columns = self.header or self.names
        return f"{count} ({', '.join(columns)})" if columns else count

    def column_name(self, index: int) -> str:
        columns = self.header or self.names
        return f" ({columns[index]})" if columns else ""


def _read_source(source: str, columns: _Columns) -> tuple[list[list[float]], list[int]]:
    if source == "-":
        return _parse(_lines(_read(_stdin(), "stdin"), "stdin"), "stdin", columns)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"--input {source!r} is not a file")
    try:
        with path.open("rb") as stream:
            blocks = _read(stream, source)
        return _parse(_lines(blocks, source), source, columns)
    except OSError as e:
        raise ConfigError(f"cannot read --input {source!r}: {e}") from None


def _stdin() -> IO[bytes] | IO[str]:
    """Standard input as bytes when it has them (decoded here, strictly, as UTF-8)."""
    stream = sys.stdin
    if stream is None or getattr(stream, "closed", False):  # started with `<&-`
        raise ConfigError("--input -: stdin is closed; pipe the inputs in or give a file")
    buffer: IO[bytes] | None = getattr(stream, "buffer", None)
    return buffer if buffer is not None else stream


def _read(stream: IO[bytes] | IO[str], shown: str) -> list[bytes]:
    """All of `stream`, in blocks, refused as soon as it passes `MAX_INPUT_BYTES` or a line
    runs past `MAX_LINE_BYTES` without a break (`< /dev/zero`: after the first block).

    Read whole before any line is parsed, so an oversized input is refused in the time it
    takes to read the bound (a tenth of a second), whatever it holds: 60 MiB of ``#`` lines
    take 11 s to parse here.
    """
    blocks: list[bytes] = []
    total = 0
    run = 0  # bytes since the last line break
    while True:
        try:
            block = stream.read(_BLOCK_BYTES)
        except (OSError, ValueError) as e:  # an I/O error, a stream closed under us
            raise ConfigError(f"cannot read --input from {shown}: {e}") from None
        if isinstance(block, str):
            block = block.encode("utf-8", "surrogateescape")
        if not block:
            return blocks
        total += len(block)
        if total > MAX_INPUT_BYTES:
            raise ConfigError(
                f"{shown} is larger than {MAX_INPUT_BYTES // 2**20} MiB; split it into smaller "
                "files"
            )
        blocks.append(block)
        cut = max(block.rfind(b"\n"), block.rfind(b"\r")) + 1
        run = run + len(block) if not cut else len(block) - cut
        if run > MAX_LINE_BYTES:
            text = b"".join(blocks).decode("utf-8", "replace")
            breaks = sum(text.count(c) for c in _LINE_BREAKS) - text.count("\r\n")
            raise ConfigError(_too_long(shown, breaks + 1))


def _lines(blocks: list[bytes], shown: str) -> Iterator[tuple[int, str]]:
    """The non-empty text lines of `blocks` with their numbers, as ``str.splitlines`` numbers
    them; each block is dropped once its lines are out.

    A block is cut after its last line break, so neither a character nor a CR LF pair is
    split: what follows waits for the next block.
    """
    number = 0  # lines ended before this part
    tail = b""  # a line not ended yet
    blocks.reverse()  # popped from the end, in order
    while blocks or tail:
        if blocks:
            block = blocks.pop()
            # After the last LF, or the last CR that does not end the block (an LF may follow).
            cut = max(block.rfind(b"\n"), block.rfind(b"\r", 0, len(block) - 1)) + 1
            part, tail = (tail + block[:cut], block[cut:]) if cut else (b"", tail + block)
        else:
            part, tail = tail, b""
        if not part:
            continue
        text = _decoded(part, shown, number)
        if number == 0:
            text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors write
        lines = text.splitlines()
        # Empty lines are skipped in C, not a Python step each (60 MiB of newlines: 6 s).
        yield from compress(enumerate(lines, start=number + 1), lines)
        number += len(lines)


def _too_long(shown: str, number: int) -> str:
    return (
        f"{shown} line {number} is longer than {MAX_LINE_BYTES:_} bytes; give one row of "
        "inputs per line"
    )


def _decoded(part: bytes, shown: str, number: int) -> str:
    """`part` as UTF-8 text; else the line and column of its first bad byte."""
    try:
        return part.decode("utf-8")
    except UnicodeDecodeError as e:
        before = part[: e.start].decode("utf-8").splitlines(keepends=True)
        last = before[-1] if before else "\n"
        if last.splitlines()[0] != last:  # the bad byte starts a line
            line, column = number + len(before) + 1, 1
        else:
            line, column = number + len(before), len(last.encode("utf-8")) + 1
        raise ConfigError(
            f"{shown} line {line}: not UTF-8 text (byte 0x{part[e.start]:02x} at column "
            f"{column}); give the numbers as plain text"
        ) from None


def _parse(
    lines: Iterator[tuple[int, str]], shown: str, columns: _Columns
) -> tuple[list[list[float]], list[int]]:
    rows: list[list[float]] = []
    numbers: list[int] = []
    header_allowed = True
    arity = columns.arity
    for number, raw in lines:
        if len(raw) > MAX_LINE_BYTES:
            raise ConfigError(_too_long(shown, number))
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in _SEPARATOR.split(line) if f]
        if '"' in line:
            fields = [_unquoted(f) for f in fields]
        if header_allowed:
            header_allowed = False
            header = columns.header_fields(line, fields)
            if header is not None:
                columns.take_header(header, shown, number)
                continue
        if len(fields) != arity:
            raise ConfigError(
                f"{shown} line {number}: expected {columns.wanted()}, got {len(fields)}: "
                f"{line[:60]!r}"
            )
        try:
            row = [float(f) for f in fields]
        except ValueError:
            at = next(i for i, f in enumerate(fields) if not _is_float(f))
            raise ConfigError(
                f"{shown} line {number}, column {at + 1}{columns.column_name(at)}: "
                f"{fields[at][:40]!r} is not a number"
            ) from None
        order = columns.order
        rows.append(row if order is None else [row[k] for k in order])
        numbers.append(number)
        if len(rows) > MAX_INPUT_ROWS:
            raise ConfigError(
                f"{shown} has more than {MAX_INPUT_ROWS:_} inputs; split it into smaller files"
            )
    return rows, numbers


def _unquoted(field: str) -> str:
    """A CSV field without its surrounding double quotes (``""`` inside is one quote)."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def _is_name(text: str) -> bool:
    """A column name: an identifier that Python's float() does not read as a number (``nan``,
    ``inf``, ``Infinity`` are numbers, whatever their case)."""
    return _NAME.fullmatch(text) is not None and not _is_float(text)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
