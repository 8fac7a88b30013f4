"""Operations defined by a table, not a formula: reading, checking and packing a table.

A table is read and validated whole before anything is written: every problem is one
`ConfigError` line naming the file, the line (or Parquet row) and the column, so a user fixes
a spreadsheet without guessing. A campaign stores the table in its database as the bytes of
`encode_table` (compressed, self-describing, deterministic: the same numbers give the same
bytes on every host), so a worker elsewhere needs only the database URL; `decode_table` reads
them back and trusts nothing in them.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import math
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, first_line
from sweep.problem.files import read_bounded

__all__ = [
    "MAX_DECODED_BYTES", "MAX_ENCODED_BYTES", "MAX_INPUTS", "MAX_NAME_LENGTH", "MAX_ROWS",
    "MAX_TABLE_FILE_BYTES", "MIN_ROWS", "Table", "decode_table", "encode_table", "read_table",
    "table_sha256", "table_summary",
]

FloatArray = npt.NDArray[np.float64]

MAX_INPUTS = 10
# Enough rows to split into training, validation, test and extrapolation examples.
MIN_ROWS = 20
MAX_ROWS = 1_000_000
MAX_TABLE_FILE_BYTES = 64 * 2**20
# The stored form travels in one INSERT: MariaDB's default max_allowed_packet is 16 MiB, and
# PyMySQL sends bytes as hex, twice their size (storage.MAX_DATASET_BYTES, the same number).
MAX_ENCODED_BYTES = 6 * 2**20
# Every value a table may hold, as float64: what decoding may allocate, whatever it is given.
MAX_DECODED_BYTES = MAX_ROWS * (MAX_INPUTS + 1) * 8
MAX_NAME_LENGTH = 64

_MAGIC = b"SWEEPTBL1"
_FORMAT = 1
_HEADER_LIMIT = 1 << 14
_HEADER_KEYS = frozenset({"format", "compression", "layout", "inputs", "target", "rows"})
# "columns": each column's float64 little-endian bytes in turn; "byteplanes": the same bytes
# with each value's byte 0 first, then byte 1, ...: better for noisy values, worse for
# decimals; encode_table keeps whichever compresses smaller.
_LAYOUTS = ("columns", "byteplanes")
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True, eq=False)
class Table:
    """A validated table: input columns in order, the target column, and their values.

    `x` is (rows, len(inputs)) and `y` is (rows,), float64, finite and read-only (copies of
    what was given). `source` names the table in messages (the file as given).

    Raises:
        ConfigError: names, shapes, sizes or values that `read_table` would refuse.
    """

    inputs: tuple[str, ...]
    target: str
    x: FloatArray
    y: FloatArray
    source: str = "the table"

    def __post_init__(self) -> None:
        inputs = tuple(self.inputs)
        where = _shown(self.source)
        _check_names([*inputs, self.target], where)
        if not 1 <= len(inputs) <= MAX_INPUTS:
            raise ConfigError(f"{where} has {len(inputs)} inputs; 1 to {MAX_INPUTS} are allowed")
        x = np.array(self.x, dtype=np.float64, order="C")
        y = np.array(self.y, dtype=np.float64, order="C")
        if x.ndim != 2 or x.shape[1] != len(inputs) or y.shape != (x.shape[0],):
            raise ConfigError(f"{where}: x {x.shape} and y {y.shape} do not fit the columns")
        _check_row_count(len(y), where)
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ConfigError(f"{where} holds NaN or infinite values")
        for field, value in (("inputs", inputs), ("x", x), ("y", y)):
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(self, field, value)

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the names and the values' little-endian bytes: the same on every host,
        whatever file (or path) the table came from."""
        digest = hashlib.sha256(b"sweep-table-1\0")
        digest.update(json.dumps([list(self.inputs), self.target]).encode() + b"\0")
        digest.update(struct.pack("<QQ", self.rows, len(self.inputs)))
        digest.update(self.x.astype("<f8").tobytes())
        digest.update(self.y.astype("<f8").tobytes())
        return digest.hexdigest()


def read_table(
    path: str | Path, *, target: str, inputs: Sequence[str] | None = None, name: str = ""
) -> Table:
    """Read and validate a whole table file: CSV, or Parquet (``.parquet``, ``.pq``) when
    pyarrow is installed.

    A CSV has a header line naming the columns, then one line per row: comma separated,
    UTF-8 (a BOM is allowed); blank lines are skipped and whitespace around a cell is not
    part of it. Every column needs a name (at most 64 characters, no control character, no
    '=' or ',': names are written ``name=value`` on the command line), and names are unique.
    The inputs are `inputs` in that order, else every column but the target in file order.
    Only the inputs and the target must be numbers (``float()``'s syntax, finite: no NaN or
    infinity); other columns are carried along unread, but every row must have every field.

    Args:
        target: The column to predict.
        inputs: The input columns, in order (default: all others).
        name: The dataset's name, for messages.

    Raises:
        ConfigError: one line naming the file, line (or row) and column of the first problem.
    """
    file = Path(path)
    source = str(path)
    where = f"dataset {name!r} ({_shown(source)})" if name else f"table {_shown(source)}"
    data = read_bounded(file, MAX_TABLE_FILE_BYTES, where, "a table file")
    if file.suffix.lower() in _PARQUET_SUFFIXES:
        chosen, columns = _parquet_columns(data, where, target, inputs)
    else:
        chosen, columns = _csv_columns(data, where, target, inputs)
    return Table(tuple(chosen[:-1]), target, np.column_stack(columns[:-1]), columns[-1], source)


def _csv_columns(
    data: bytes, where: str, target: str, inputs: Sequence[str] | None
) -> tuple[list[str], list[FloatArray]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{where}: line {line} is not UTF-8 text ({e.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise ConfigError(f"{where} is empty; its first line must name the columns")
        names = [cell.strip() for cell in header]
        chosen, indices = _select(names, where, target, inputs, f"line {reader.line_num}")
        values = [array("d") for _ in indices]
        rows = 0
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # a blank line, or a spreadsheet's empty row of commas
            if len(row) != len(names):
                raise ConfigError(
                    f"{where}: line {reader.line_num} has {len(row)} fields, but the header "
                    f"has {len(names)} columns"
                )
            rows += 1
            if rows > MAX_ROWS:
                raise ConfigError(f"{where} has more than {MAX_ROWS:,} rows, the limit")
            for column, index in zip(values, indices, strict=True):
                column.append(_number(row[index], where, reader.line_num, names[index]))
    except csv.Error as e:
        raise ConfigError(f"{where}: line {reader.line_num} is not valid CSV ({e})") from None
    _check_row_count(rows, where)
    return chosen, [np.frombuffer(column, dtype=np.float64) for column in values]


def _number(cell: str, where: str, line: int, column: str) -> float:
    text = cell.strip()
    at = f"{where}: line {line}, column {column!r}"
    if not text:
        raise ConfigError(f"{at} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{at}: {_cell(text)} is not a number") from None
    if not math.isfinite(value):  # NaN or infinity, spelled out or overflowing (1e999)
        raise ConfigError(f"{at}: {_cell(text)} is not a finite number (no NaN or infinity)")
    return value


def _parquet_columns(
    data: bytes, where: str, target: str, inputs: Sequence[str] | None
) -> tuple[list[str], list[FloatArray]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{where}: reading Parquet needs pyarrow (pip install pyarrow); or give a CSV"
        ) from None
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        raw_names = [str(n) for n in parquet.schema_arrow.names]
        rows = int(parquet.metadata.num_rows)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ConfigError(f"{where} is not a readable Parquet file ({first_line(e)})") from None
    chosen, indices = _select([n.strip() for n in raw_names], where, target, inputs, "header")
    _check_row_count(rows, where)  # before reading: a small file may claim many rows
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    columns: list[FloatArray] = []
    try:
        read = parquet.read(columns=[raw_names[i] for i in indices])
        for number, column in enumerate(chosen):
            values = read.column(number)
            if not any(is_kind(values.type) for is_kind in numeric):
                raise ConfigError(f"{where}: column {column!r} holds {values.type}, not numbers")
            floats = np.asarray(values.cast(pa.float64(), safe=False).to_numpy(), np.float64)
            empty = np.asarray(values.is_null().to_numpy(), bool)
            bad = np.flatnonzero(empty | ~np.isfinite(floats))
            if bad.size:
                row = int(bad[0])
                problem = "is empty" if empty[row] else f"{floats[row]} is not a finite number"
                raise ConfigError(f"{where}: row {row + 1}, column {column!r}: {problem}")
            columns.append(floats)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ConfigError(f"{where}: its columns cannot be read ({first_line(e)})") from None
    return chosen, columns


def _select(
    names: list[str], where: str, target: str, inputs: Sequence[str] | None, at: str
) -> tuple[list[str], list[int]]:
    """The input columns then the target, and their indices in the file."""
    _check_names(names, f"{where}: {at}", listing=True)
    known = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
    if target not in names:
        hint = ""
        if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
            hint = " (columns must be separated by commas)"
        elif all(n.lstrip("+-")[:1].isdigit() for n in names):
            hint = " (the first line must name the columns)"
        raise ConfigError(f"{where} has no target column {target!r}; its columns: {known}{hint}")
    if inputs is None:
        chosen = [n for n in names if n != target]
    else:
        chosen = list(inputs)
        for column in chosen:
            if column == target:
                raise ConfigError(f"{where}: input {column!r} is the target column")
            if column not in names:
                raise ConfigError(f"{where} has no input column {column!r}; its columns: {known}")
            if chosen.count(column) > 1:
                raise ConfigError(f"{where}: input {column!r} is listed twice")
    if not chosen:
        raise ConfigError(f"{where} has no input column besides the target {target!r}")
    if len(chosen) > MAX_INPUTS:
        raise ConfigError(
            f"{where} has {len(chosen)} input columns; at most {MAX_INPUTS} are allowed "
            "(choose some with inputs = [...])"
        )
    chosen.append(target)
    return chosen, [names.index(n) for n in chosen]


def _check_names(names: Sequence[str], where: str, *, listing: bool = False) -> None:
    seen: set[str] = set()
    for position, column in enumerate(names, start=1):
        what = f"column {position}" if listing else "a column"
        if not isinstance(column, str) or not column.strip():
            raise ConfigError(f"{where}: {what} has no name; name it or remove it")
        shown = _cell(column)
        if column != column.strip():
            raise ConfigError(f"{where}: column name {shown} has surrounding whitespace")
        if len(column) > MAX_NAME_LENGTH:
            raise ConfigError(
                f"{where}: column name {shown} is {len(column)} characters; at most "
                f"{MAX_NAME_LENGTH} are allowed"
            )
        if any(not ch.isprintable() for ch in column) or "=" in column or "," in column:
            raise ConfigError(f"{where}: column name {shown} holds a control character, '=' or ','")
        if column in seen:
            raise ConfigError(f"{where}: column name {shown} appears twice")
        seen.add(column)


def _check_row_count(rows: int, where: str) -> None:
    if rows < MIN_ROWS:
        raise ConfigError(
            f"{where} has {rows} row{'' if rows == 1 else 's'}; at least {MIN_ROWS} are "
            "needed (for training, validation, test and extrapolation)"
        )
    if rows > MAX_ROWS:
        raise ConfigError(f"{where} has {rows:,} rows; at most {MAX_ROWS:,} are allowed")


def _cell(text: str, limit: int = 24) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:197] + "...")


# --- the stored form --------------------------------------------------------------------------
# _MAGIC, a 4-byte big-endian header length, the header (JSON), then bz2 of the values: the
# inputs' columns then the target's, float64 little-endian, in the header's layout. bzip2 (one
# implementation everywhere, unlike zlib's) makes the bytes, and so their sha256, the same on
# every host. The file's path is not stored: the bytes depend on the numbers alone.


def encode_table(table: Table) -> bytes:
    """The table's stored form (see `decode_table`).

    Raises:
        ConfigError: the compressed form is over MAX_ENCODED_BYTES.
    """
    columns = np.empty((len(table.inputs) + 1, table.rows), dtype="<f8")
    columns[:-1] = table.x.T
    columns[-1] = table.y
    planes = columns.reshape(-1).view(np.uint8).reshape(-1, 8).T
    payloads = [bz2.compress(columns.tobytes(), 9), bz2.compress(planes.tobytes(), 9)]
    layout, payload = min(zip(_LAYOUTS, payloads, strict=True), key=lambda c: len(c[1]))
    header = json.dumps(
        {
            "format": _FORMAT, "compression": "bz2", "layout": layout,
            "inputs": list(table.inputs), "target": table.target, "rows": table.rows,
        },
        sort_keys=True, separators=(",", ":"),
    ).encode()
    blob = _MAGIC + struct.pack(">I", len(header)) + header + payload
    if len(blob) > MAX_ENCODED_BYTES:
        raise ConfigError(
            f"{_shown(table.source)} takes {len(blob):,} bytes compressed; at most "
            f"{MAX_ENCODED_BYTES:,} can be stored with a campaign: use fewer rows or columns"
        )
    return blob


def table_sha256(blob: bytes) -> str:
    """The hex sha256 of a stored table's bytes, recorded with them."""
    return hashlib.sha256(blob).hexdigest()


def decode_table(
    blob: bytes, *, sha256: str | None = None, source: str = "the stored table"
) -> Table:
    """A table from its stored form, nothing in it trusted: the checksum (when given), the
    header, the size it claims (checked before anything is allocated), the values.

    Args:
        sha256: The checksum recorded with the bytes.
        source: What the table is called in messages (and its `source`).

    Raises:
        ConfigError: one line: the bytes are damaged, foreign or too large.
    """
    damaged = f"{source} is damaged"
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise ConfigError(f"{damaged} (not bytes but {type(blob).__name__})")
    blob = bytes(blob)
    if sha256 is not None:
        actual = table_sha256(blob)
        if actual != sha256:
            raise ConfigError(
                f"{damaged} (checksum mismatch: sha256 {actual[:12]}..., recorded "
                f"{str(sha256)[:12]}...)"
            )
    if len(blob) > MAX_ENCODED_BYTES:
        raise ConfigError(f"{damaged} ({len(blob):,} bytes; at most {MAX_ENCODED_BYTES:,})")
    if not blob.startswith(_MAGIC):
        raise ConfigError(f"{damaged} (it does not start as a stored table)")
    start = len(_MAGIC) + 4
    (length,) = struct.unpack(">I", blob[len(_MAGIC) : start]) if len(blob) >= start else (-1,)
    if not 0 < length <= min(_HEADER_LIMIT, len(blob) - start):
        raise ConfigError(f"{damaged} (its header is cut short)")
    inputs, target, rows, layout = _parse_header(blob[start : start + length], damaged)
    width = len(inputs) + 1
    raw = _decompress(blob[start + length :], rows * width * 8, damaged)
    if layout == "columns":
        values = np.frombuffer(raw, dtype="<f8")
    else:
        values = np.ascontiguousarray(np.frombuffer(raw, np.uint8).reshape(8, -1).T)
        values = values.reshape(-1).view("<f8")
    columns = values.astype(np.float64, copy=False).reshape(width, rows)
    if not np.isfinite(columns).all():
        raise ConfigError(f"{damaged} (it holds NaN or infinite values)")
    try:
        return Table(tuple(inputs), target, columns[:-1].T, columns[-1], source=source)
    except ConfigError as e:
        raise ConfigError(f"{damaged} ({e})") from None


def _parse_header(data: bytes, damaged: str) -> tuple[list[str], str, int, str]:
    try:
        header = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        raise ConfigError(f"{damaged} (its header is not a stored table's)")
    if header["format"] != _FORMAT or header["compression"] != "bz2":
        raise ConfigError(
            f"{damaged} (format {_cell(str(header['format']))}, "
            f"{_cell(str(header['compression']))}: written by another version of sweep?)"
        )
    inputs, target, rows, layout = (header[k] for k in ("inputs", "target", "rows", "layout"))
    if (
        not isinstance(inputs, list)
        or not 1 <= len(inputs) <= MAX_INPUTS
        or not all(isinstance(n, str) for n in inputs)
        or not isinstance(target, str)
        or isinstance(rows, bool)
        or not isinstance(rows, int)
        or not MIN_ROWS <= rows <= MAX_ROWS
        or layout not in _LAYOUTS
    ):
        raise ConfigError(f"{damaged} (its header holds impossible columns, rows or layout)")
    return inputs, target, rows, layout


def _decompress(payload: bytes, expected: int, damaged: str) -> bytes:
    """Exactly `expected` bytes (at most MAX_DECODED_BYTES: the header's bounds), or a
    refusal: never more is inflated, so a bomb stays small."""
    decompressor = bz2.BZ2Decompressor()
    try:
        raw = decompressor.decompress(payload, max_length=expected)
        if len(raw) == expected and not decompressor.eof:
            extra = decompressor.decompress(b"", max_length=1)  # only the end marker may remain
            if extra:
                raise ConfigError(f"{damaged} (it holds more values than its header says)")
    except (OSError, EOFError, ValueError):
        raise ConfigError(f"{damaged} (its values cannot be decompressed)") from None
    if len(raw) != expected or not decompressor.eof or decompressor.unused_data:
        raise ConfigError(f"{damaged} (its values do not match its header)")
    return raw


def table_summary(table: Table) -> dict[str, Any]:
    """What a report or the stored campaign says of a table (JSON-ready): its columns, rows,
    each column's range and whether it holds whole numbers only, and its fingerprint."""

    def describe(values: FloatArray) -> dict[str, Any]:
        whole = bool((np.floor(values) == values).all())
        return {"min": float(values.min()), "max": float(values.max()), "whole": whole}

    columns = {name: describe(table.x[:, i]) for i, name in enumerate(table.inputs)}
    columns[table.target] = describe(table.y)
    return {
        "inputs": list(table.inputs), "target": table.target, "rows": table.rows,
        "columns": columns, "fingerprint": table.fingerprint,
    }
