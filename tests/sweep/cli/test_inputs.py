"""`sweep predict --input`: inputs read line by line under bounds, a header that is only names,
one line for stdin that is closed or not UTF-8. Everything here is refused (or read) before
TensorFlow starts."""

from __future__ import annotations

import io
import math
import sys
import time
from pathlib import Path

import pytest

from storage import Database
from sweep.cli import inputs, main
from sweep.cli.inputs import MAX_INPUT_BYTES, MAX_LINE_BYTES, read_pairs, read_rows
from sweep.errors import ConfigError


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A sweep database with the sweep's tables and nothing else (predict refuses the input
    before it would look for a model)."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    with Database(url) as database:
        database.campaigns  # noqa: B018 - creates the sweep's tables
    return url


def _predict(
    url: str, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(["predict", *argv, "--storage", url])
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, *expected: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


class _Endless(io.RawIOBase):
    """`size` bytes of `byte`, made as they are read (a `head -c 300M /dev/zero`), counting
    how many were read."""

    def __init__(self, byte: bytes, size: int) -> None:
        self.byte, self.left, self.served = byte, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = self.byte * n
        self.left -= n
        self.served += n
        return n


def _stdin_of(raw: io.RawIOBase | io.BytesIO) -> io.TextIOWrapper:
    """A stand-in for sys.stdin: bytes under a strict UTF-8 text layer."""
    binary = raw if isinstance(raw, io.BytesIO) else io.BufferedReader(raw)
    return io.TextIOWrapper(binary, encoding="utf-8", errors="strict")


@pytest.mark.parametrize("first", ["nan,inf", "inf, -inf", "NaN Infinity", "INFINITY,nan"])
def test_a_first_line_of_number_words_is_a_row_not_a_header(first: str, tmp_path: Path) -> None:
    """float() reads nan, inf and infinity in any case: such a line is data, so the answers
    keep lining up with the lines (it used to be skipped as a header: its fields look like
    names)."""
    path = tmp_path / "in.csv"
    path.write_text(f"{first}\n1,2\n")
    rows, numbers = read_pairs(str(path), 2)
    assert numbers == [1, 2] and rows[1] == [1.0, 2.0]
    assert not any(math.isfinite(v) for v in rows[0])


@pytest.mark.parametrize("first", ["a,inf", "nan,b", "x,1"])
def test_a_first_line_mixing_names_and_numbers_is_a_bad_row(first: str, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"{first}\n1,2\n")
    with pytest.raises(ConfigError, match=r"line 1, column [12]: '[abx]' is not a number"):
        read_pairs(str(path), 2)


def test_a_header_is_still_a_line_of_names(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("# pairs\na, b_2\n1,2\n\n3 4\n")
    assert read_pairs(str(path), 2) == ([[1.0, 2.0], [3.0, 4.0]], [3, 5])


def test_quoted_fields_are_read_without_their_quotes(tmp_path: Path) -> None:
    """R's write.csv and spreadsheets quote names (and sometimes numbers): the header still
    maps the columns by name, and a quoted number is a number."""
    path = tmp_path / "in.csv"
    path.write_text('"V","T","R","n"\n2,300,8.3,1.5\n"1","250","8","1"\n')
    rows, numbers = read_rows(str(path), ("n", "R", "T", "V"), "gas")
    assert rows == [[1.5, 8.3, 300.0, 2.0], [1.0, 8.0, 250.0, 1.0]] and numbers == [2, 3]
    path.write_text('"Temp C","b"\n21.5,2\n')
    assert read_rows(str(path), ("b", "Temp C"), "t") == ([[2.0, 21.5]], [2])
    path.write_text('"a","b"\n1 2\n')
    assert read_pairs(str(path), 2) == ([[1.0, 2.0]], [2])
    path.write_text('"V","T","R","x"\n2,300,8.3,1.5\n')
    with pytest.raises(ConfigError, match="line 1, column 4: 'x' is not an input of gas"):
        read_rows(str(path), ("n", "R", "T", "V"), "gas")
    path.write_text('V,T,R,n\n2,300,8.3,"1.5x"\n')
    with pytest.raises(ConfigError, match=r"line 2, column 4 \(n\): '1.5x' is not a number"):
        read_rows(str(path), ("n", "R", "T", "V"), "gas")


def test_predict_refuses_a_nan_inf_first_line_by_number(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("nan,inf\n1,2\n"))
    code, out, err = _predict(url, capsys, "add", "--input", "-")
    assert code == 2 and not out
    _one_error_line(err, "line 1: a=nan, b=inf is not a finite number")


def test_line_numbers_follow_every_line_break_and_a_byte_order_mark_is_skipped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n\r\n3,4\r5,6\n7,8")
    assert read_pairs(str(path), 2) == (
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], [2, 4, 5, 6]
    )


def test_closed_stdin_is_one_line(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sweep predict add --input - <&-`: Python starts with sys.stdin None (it used to end in
    an AttributeError traceback)."""
    monkeypatch.setattr("sys.stdin", None)
    code, out, err = _predict(url, capsys, "add", "--input", "-")
    assert code == 2 and not out
    _one_error_line(err, "stdin is closed")
    closed = io.StringIO("1,2\n")
    closed.close()
    monkeypatch.setattr("sys.stdin", closed)
    code, _, err = _predict(url, capsys, "add", "--input", "-")
    assert code == 2
    _one_error_line(err, "stdin is closed")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"1,2\n\xff\xfe,3\n", "stdin line 2: not UTF-8 text (byte 0xff at column 1)"),
        (b"1,2\n3,\xe9\n", "stdin line 2: not UTF-8 text (byte 0xe9 at column 3)"),
    ],
)
def test_non_utf8_stdin_is_one_line_naming_the_line(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    data: bytes, expected: str,
) -> None:
    monkeypatch.setattr("sys.stdin", _stdin_of(io.BytesIO(data)))
    code, out, err = _predict(url, capsys, "add", "--input", "-")
    assert code == 2 and not out
    _one_error_line(err, expected)


def test_a_non_utf8_file_is_one_line(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,b\n1,2\n3,\u00e9\n".encode("latin-1"))
    code, _, err = _predict(url, capsys, "add", "--input", str(path))
    assert code == 2
    _one_error_line(err, f"{path} line 3: not UTF-8 text")


def test_300_mb_without_a_newline_is_refused_after_one_line_bound(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sweep predict add --input - < /dev/zero` (300 MB of it): it used to read all of it
    into memory (670 MiB, 40 s) before the refusal."""
    zeros = _Endless(b"\0", 300 * 10**6)
    monkeypatch.setattr("sys.stdin", _stdin_of(zeros))
    started = time.monotonic()
    code, out, err = _predict(url, capsys, "add", "--input", "-")
    assert code == 2 and not out
    _one_error_line(err, f"stdin line 1 is longer than {MAX_LINE_BYTES:_} bytes")
    assert zeros.served <= MAX_LINE_BYTES + 2**20, zeros.served
    assert time.monotonic() - started < 5


def test_input_beyond_the_byte_bound_is_refused_before_reading_the_rest(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blank lines (or comments) count toward no row bound, but toward the byte bound."""
    newlines = _Endless(b"\n", 300 * 10**6)
    monkeypatch.setattr("sys.stdin", _stdin_of(newlines))
    code, out, err = _predict(url, capsys, "add", "--input", "-")
    assert code == 2 and not out
    _one_error_line(err, f"stdin is larger than {MAX_INPUT_BYTES // 2**20} MiB")
    assert newlines.served <= MAX_INPUT_BYTES + 2**20, newlines.served


def test_the_row_bound_still_holds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(inputs, "MAX_INPUT_ROWS", 3)
    path = tmp_path / "in.csv"
    path.write_text("1,2\n" * 4)
    with pytest.raises(ConfigError, match="more than 3 inputs"):
        read_pairs(str(path), 2)
    path.write_text("1,2\n" * 3)
    assert len(read_pairs(str(path), 2)[0]) == 3


def test_stdin_is_read_as_bytes_when_it_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _stdin_of(io.BytesIO(b"1 2\n# x\n3,4\n")))
    assert read_pairs("-", 2) == ([[1.0, 2.0], [3.0, 4.0]], [1, 3])


def test_a_long_line_is_refused_by_its_number_whether_or_not_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for data in (b"1,2\r\n3,4\n" + b" " * 2**21, b"1,2\n\n" + b"5" * (MAX_LINE_BYTES + 1) + b"\n"):
        monkeypatch.setattr(sys, "stdin", _stdin_of(io.BytesIO(data)))
        with pytest.raises(ConfigError, match=f"stdin line 3 is longer than {MAX_LINE_BYTES:_}"):
            read_pairs("-", 2)
