"""Tables as operations: real files read and refused line by line, the stored form round-trips
bit for bit and refuses damaged, foreign or inflated bytes."""

from __future__ import annotations

import bz2
import json
import os
import struct
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sweep.errors import ConfigError
from sweep.problem import tables
from sweep.problem.tables import (
    MAX_INPUTS,
    MIN_ROWS,
    Table,
    decode_table,
    encode_table,
    read_table,
    table_sha256,
    table_summary,
)

ROWS = [f"{i},{i * 0.5},{i * i}" for i in range(1, 26)]  # columns a, b, P; lines 2..26


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def lines(header: str = "a,b,P", rows: list[str] | None = None) -> str:
    return "\n".join([header, *(ROWS if rows is None else rows)]) + "\n"


def refused(path: Path, **kwargs: Any) -> str:
    kwargs.setdefault("target", "P")
    with pytest.raises(ConfigError) as info:
        read_table(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def small_table(source: str = "t.csv") -> Table:
    x = np.array([[i, -i / 3] for i in range(MIN_ROWS)], dtype=float)
    return Table(("a", "b"), "P", x, x[:, 0] * x[:, 1], source=source)


# --- good tables ------------------------------------------------------------------------------


def test_inputs_default_to_every_other_column_in_file_order(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, lines("b,P,a", ROWS)), target="P")
    assert table.inputs == ("b", "a") and table.target == "P" and table.rows == 25
    assert table.source == str(tmp_path / "t.csv")
    np.testing.assert_array_equal(table.x[0], [1.0, 1.0])  # b = 1, a = 1 * 1
    np.testing.assert_array_equal(table.y[:3], [0.5, 1.0, 1.5])
    assert table.x.dtype == np.float64 and table.x.shape == (25, 2)
    with pytest.raises(ValueError):
        table.x[0, 0] = 5.0  # read-only


def test_inputs_select_and_order_and_other_columns_are_ignored(tmp_path: Path) -> None:
    rows = [f"{i},note {i},{i + 1},{2 * i}" for i in range(30)]
    path = write(tmp_path, lines("a,comment,b,P", rows))
    table = read_table(path, target="P", inputs=["b", "a"])
    assert table.inputs == ("b", "a")
    np.testing.assert_array_equal(table.x[3], [4.0, 3.0])
    # Without `inputs` the text column is an input, and refused as one.
    assert "line 2, column 'comment': 'note 0' is not a number" in refused(path)


def test_bom_whitespace_blank_lines_crlf_quotes_and_big_numbers(tmp_path: Path) -> None:
    rows = [f' {i} ,"{i}.5", {i}e300 ' for i in range(MIN_ROWS)]
    text = "\ufeff" + "\r\n".join(["", " a , b ,  P ", "", *rows[:10], ",,", "  ", *rows[10:]])
    table = read_table(write(tmp_path, text), target="P")
    assert table.inputs == ("a", "b") and table.rows == MIN_ROWS
    assert table.y[-1] == 19e300 and table.x[1, 1] == 1.5


def test_a_table_is_copied_and_checked() -> None:
    x = np.ones((MIN_ROWS, 1))
    table = Table(("a",), "y", x, np.arange(MIN_ROWS))
    x[0, 0] = 7.0
    assert table.x[0, 0] == 1.0 and table.y.dtype == np.float64
    for args, fragment in [
        ((("a",), "y", np.ones((MIN_ROWS, 2)), np.ones(MIN_ROWS)), "do not fit"),
        ((("a",), "y", np.ones((5, 1)), np.ones(5)), "at least 20"),
        ((("a",), "y", np.full((MIN_ROWS, 1), np.nan), np.ones(MIN_ROWS)), "NaN"),
        ((("a",), "a", x, np.ones(MIN_ROWS)), "appears twice"),
        (((), "y", np.ones((MIN_ROWS, 0)), np.ones(MIN_ROWS)), "0 inputs"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            Table(*args)


# --- bad tables: one line naming the line and the column ---------------------------------------


BAD_CELLS = [
    ("abc", "line 5, column 'b': 'abc' is not a number"),
    ("1,5", "line 5 has 4 fields, but the header has 3 columns"),
    ("", "line 5, column 'b' is empty"),
    ("nan", "line 5, column 'b': 'nan' is not a finite number"),
    ("NaN", "'NaN' is not a finite number"),
    ("-Infinity", "'-Infinity' is not a finite number"),
    ("+inf", "'+inf' is not a finite number"),
    ("1e999", "'1e999' is not a finite number"),
    ("x" * 100, "'xxxxxxxxxxxxxxxxxxxxx...' is not a number"),
]


@pytest.mark.parametrize(
    ("cell", "fragment"), BAD_CELLS, ids=[c[:8] or "empty" for c, _ in BAD_CELLS]
)
def test_a_bad_cell_is_named_by_line_and_column(tmp_path: Path, cell: str, fragment: str) -> None:
    rows = list(ROWS)
    rows[3] = f"4,{cell},16"  # line 5 (the header is line 1)
    message = refused(write(tmp_path, lines(rows=rows)), name="gas")
    assert message.startswith(f"dataset 'gas' ('{tmp_path / 't.csv'}')")
    assert fragment in message


@pytest.mark.parametrize(
    ("header", "kwargs", "fragment"),
    [
        ("a,a,P", {}, "line 1: column name 'a' appears twice"),
        ("a,,P", {}, "line 1: column 2 has no name"),
        ("a,b=1,P", {}, "column name 'b=1' holds a control character, '=' or ','"),
        ('a,"b,c",P', {}, "column name 'b,c' holds"),
        ("a,b\x01,P", {}, "holds a control character"),
        ("a," + "b" * 65 + ",P", {}, "is 65 characters; at most 64"),
        ("a,b,p", {}, "has no target column 'P'; its columns: 'a', 'b', 'p'"),
        ("a;b;P", {}, "(columns must be separated by commas)"),
        ("1,2,3", {}, "(the first line must name the columns)"),
        ("a,b,P", {"inputs": ["a", "c"]}, "has no input column 'c'; its columns: 'a', 'b', 'P'"),
        ("a,b,P", {"inputs": ["a", "P"]}, "input 'P' is the target column"),
        ("a,b,P", {"inputs": ["a", "a"]}, "input 'a' is listed twice"),
        ("a,b,P", {"inputs": []}, "has no input column besides the target 'P'"),
    ],
)
def test_bad_columns(tmp_path: Path, header: str, kwargs: dict[str, Any], fragment: str) -> None:
    rows = ROWS if header.count(",") == 2 else [r.replace(",", ";") for r in ROWS]
    assert fragment in refused(write(tmp_path, lines(header, rows)), **kwargs)


def test_only_the_target_is_no_table(tmp_path: Path) -> None:
    path = write(tmp_path, lines("P", [str(i) for i in range(30)]))
    assert "has no input column besides the target 'P'" in refused(path)


def test_too_many_inputs(tmp_path: Path) -> None:
    width = MAX_INPUTS + 2
    header = ",".join([f"c{i}" for i in range(width - 1)] + ["P"])
    path = write(tmp_path, lines(header, [",".join(["1"] * width)] * 30))
    assert f"11 input columns; at most {MAX_INPUTS} are allowed" in refused(path)
    assert read_table(path, target="P", inputs=["c3", "c0"]).inputs == ("c3", "c0")


def test_row_count_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "has 19 rows; at least 20 are needed" in refused(
        write(tmp_path, lines(rows=[*ROWS[:19], "", ""]))
    )
    monkeypatch.setattr(tables, "MAX_ROWS", 24)
    assert "has more than 24 rows, the limit" in refused(write(tmp_path, lines()))


def test_file_limits_and_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "does not exist" in refused(tmp_path / "missing.csv")
    assert "is a directory" in refused(tmp_path)
    assert "is empty; its first line must name the columns" in refused(write(tmp_path, "\n\n"))
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(lines().encode() + "é,1,2\n".encode("latin-1"))
    assert "line 27 is not UTF-8 text" in refused(bad)
    assert "line 3 is not valid CSV" in refused(write(tmp_path, 'a,b,P\n1,2,3\n4,"5"x,6\n'))
    monkeypatch.setattr(tables, "MAX_TABLE_FILE_BYTES", 100)
    assert "bytes; a table file may be at most 100" in refused(write(tmp_path, lines()))


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(refused(fifo)), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "reading a FIFO without a writer hung"
    assert "is not a regular file (a FIFO, device or socket)" in outcome[0]


# --- the stored form --------------------------------------------------------------------------


def test_round_trip_is_bit_exact_and_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3)) * 1e6
    x[0] = [-0.0, 5e-324, -1.7976931348623157e308]
    y = np.round(rng.random(500) * 100, 2)
    table = Table(("u", "v", "w"), "z", x, y, source="one/path.csv")
    blob = encode_table(table)
    assert blob == encode_table(Table(("u", "v", "w"), "z", x, y, source="other.csv"))
    back = decode_table(blob, sha256=table_sha256(blob), source="stored")
    assert back.inputs == ("u", "v", "w") and back.target == "z" and back.source == "stored"
    assert back.x.tobytes() == table.x.tobytes() and back.y.tobytes() == table.y.tobytes()
    assert back.fingerprint == table.fingerprint


def test_fingerprint_and_bytes_are_pinned() -> None:
    """The same numbers give the same fingerprint and the same stored bytes on every host: a
    change here makes existing campaigns' tables differ from a re-read of the same file."""
    table = small_table()
    assert table.fingerprint == small_table("elsewhere.parquet").fingerprint
    assert table.fingerprint == PINNED_FINGERPRINT
    assert table_sha256(encode_table(table)) == PINNED_SHA256
    changed = Table(table.inputs, "Q", table.x, table.y)
    assert changed.fingerprint != table.fingerprint


PINNED_FINGERPRINT = "468c4ff37fe885481977ce64454456cc31c42c0317efb052887404f658c62ef0"
PINNED_SHA256 = "5612422eb871aa31e7d37541b837fcf05ffeae496b03a3b70e0de4b8fc28682a"


def stored(header: dict[str, Any], raw: bytes, *, magic: bytes = b"SWEEPTBL1") -> bytes:
    text = json.dumps(header).encode()
    return magic + struct.pack(">I", len(text)) + text + bz2.compress(raw)


def header(**changes: Any) -> dict[str, Any]:
    base = {"format": 1, "compression": "bz2", "layout": "columns", "inputs": ["a"],
            "target": "y", "rows": MIN_ROWS}
    return {**base, **changes}


def test_both_layouts_decode() -> None:
    values = np.arange(2 * MIN_ROWS, dtype="<f8")
    planes = values.view(np.uint8).reshape(-1, 8).T.tobytes()
    for layout, raw in (("columns", values.tobytes()), ("byteplanes", planes)):
        table = decode_table(stored(header(layout=layout), raw))
        np.testing.assert_array_equal(table.x[:, 0], values[:MIN_ROWS])
        np.testing.assert_array_equal(table.y, values[MIN_ROWS:])


def damaged(blob: bytes, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        decode_table(blob, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith("the stored table is damaged (")
    return message


def test_decode_refuses_damaged_and_foreign_bytes() -> None:
    blob = encode_table(small_table())
    assert "checksum mismatch" in damaged(blob, sha256=table_sha256(blob[:-1] + b"x"))
    flipped = bytearray(blob)
    flipped[-20] ^= 0xFF
    damaged(bytes(flipped))  # bzip2's own checks, or ours on what it yields
    assert "does not start as a stored table" in damaged(b"PK\x03\x04" + blob)
    assert "header is cut short" in damaged(blob[:12])
    assert "header is cut short" in damaged(blob[:9] + b"\xff\xff\xff\xff" + blob[13:])
    assert "do not match its header" in damaged(blob[:-10])
    assert "do not match its header" in damaged(blob + b"trailing")
    values = np.arange(2 * MIN_ROWS, dtype="<f8")
    assert "not a stored table's" in damaged(stored({"inputs": ["a"]}, values.tobytes()))
    assert "another version" in damaged(stored(header(format=2), values.tobytes()))
    for bad in (
        {"rows": tables.MAX_ROWS + 1},
        {"rows": True},
        {"inputs": [f"c{i}" for i in range(MAX_INPUTS + 1)]},
        {"inputs": [1]},
        {"layout": "rows"},
    ):
        assert "impossible columns, rows or layout" in damaged(stored(header(**bad), b""))
    values[3] = np.inf
    assert "NaN or infinite" in damaged(stored(header(), values.tobytes()))
    assert "appears twice" in damaged(stored(header(inputs=["y"]), np.ones(40).tobytes()))


def test_decode_never_inflates_more_than_the_header_claims() -> None:
    bomb = stored(header(), b"\0" * (64 * 2**20))  # 64 MiB behind a header claiming 320 bytes
    assert len(bomb) < 10_000
    tracemalloc.start()
    try:
        message = damaged(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "more values than its header says" in message
    assert peak < 2 * 2**20


def test_encode_refuses_what_the_database_cannot_take(monkeypatch: pytest.MonkeyPatch) -> None:
    from storage import MAX_DATASET_BYTES

    assert tables.MAX_ENCODED_BYTES == MAX_DATASET_BYTES  # what storage accepts, no more
    monkeypatch.setattr(tables, "MAX_ENCODED_BYTES", 100)
    with pytest.raises(ConfigError, match=r"'t\.csv' takes \d+ bytes compressed; at most 100"):
        encode_table(small_table())


def test_summary_is_json_ready() -> None:
    summary = table_summary(small_table())
    assert json.loads(json.dumps(summary)) == summary
    assert summary["inputs"] == ["a", "b"] and summary["target"] == "P"
    assert summary["rows"] == MIN_ROWS and summary["fingerprint"] == small_table().fingerprint
    assert summary["columns"]["a"] == {"min": 0.0, "max": 19.0, "whole": True}
    assert summary["columns"]["b"]["whole"] is False
    assert summary["columns"]["P"]["max"] == 0.0


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_needs_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "gas.parquet"
    path.write_bytes(b"PAR1")
    message = refused(path)
    assert message.endswith("reading Parquet needs pyarrow (pip install pyarrow); or give a CSV")


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 30
    columns = {
        "T": pa.array(range(n), pa.int32()),
        "note": pa.array([f"row {i}" for i in range(n)]),
        "V": pa.array([i / 4 for i in range(n)], pa.float32()),
        "P": pa.array([float(i * i) for i in range(n)]),
    }
    path = tmp_path / "gas.parquet"
    pq.write_table(pa.table(columns), path)
    table = read_table(path, target="P", inputs=["V", "T"])
    assert table.inputs == ("V", "T") and table.rows == n
    np.testing.assert_array_equal(table.x[5], [1.25, 5.0])
    assert "column 'note' holds string, not numbers" in refused(path)

    def write_parquet(**changed: Any) -> Path:
        pq.write_table(pa.table({**columns, **changed}), path)
        return path

    holes: list[Any] = [1.0] * n
    holes[6] = None
    assert "row 7, column 'V': is empty" in refused(write_parquet(V=pa.array(holes)), inputs=["V"])
    holes[6] = float("nan")
    assert "row 7, column 'V': nan is not a finite number" in refused(
        write_parquet(V=pa.array(holes)), inputs=["V"]
    )
    few = {k: v.slice(0, 5) for k, v in columns.items()}
    pq.write_table(pa.table(few), path)
    assert "has 5 rows; at least 20" in refused(path, inputs=["T"])
    path.write_bytes(b"not parquet at all")
    assert "is not a readable Parquet file" in refused(path)
