"""`sweep predict --input`, `--format json` on best/models/predict, and `sweep --version`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from _hand_models import exact_add, exact_multiply, promote

from sweep import __version__
from sweep.cli import main


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    promote(url, "add", exact_add(), 1.0)
    promote(url, "multiply", exact_multiply(), 1.0)
    return url


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"sweep {__version__}"


def test_predict_many_pairs_from_a_csv_file_and_from_stdin(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("a,b\n2,3\n\n# a comment\n-0.0, 7\n1e6,2.5\n")
    code, out, err = _run(["predict", "add", "--input", str(csv), "--storage", url], capsys)
    assert code == 0, err
    # 1e6 + 2.5 is not rounded: an input of the row is not a whole number.
    assert out.splitlines() == ["5", "7", "1000002.5"]

    monkeypatch.setattr("sys.stdin", io.StringIO("12 34\n0 5\n"))
    code, out, err = _run(
        ["predict", "multiply", "--input", "-", "--format", "json", "--storage", url], capsys
    )
    assert code == 0, err
    body = json.loads(out)
    assert body["operation"] == "multiply" and body["model_version"] == 1
    assert body["instances"] == [[12.0, 34.0], [0.0, 5.0]]
    assert body["answers"] == [408.0, 0.0] and body["exact"] == [408.0, 0.0]
    assert len(body["predictions"]) == 2

    code, out, _ = _run(["predict", "add", "2", "3", "--format", "json", "--storage", url], capsys)
    assert code == 0 and json.loads(out)["answers"] == [5.0]
    code, out, _ = _run(["predict", "add", "2", "3", "--storage", url], capsys)
    assert out.startswith("add(2, 3) = 5 ") and "version 1" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2\n3\n", "line 2: expected 2 numbers (a, b), got 1"),
        ("1,2\n3,x\n", "line 2, column 2 (b): 'x' is not a number"),
        ("b,a\n3,x\n", "line 2, column 2 (a): 'x' is not a number"),
        ("a,c\n1,2\n", "line 1, column 2: 'c' is not an input of add (its inputs: a, b)"),
        ("a\n1,2\n", "line 1: the header has no column for b"),
        ("1,2\n\n1,nan\n", "line 3: a=1, b=nan is not a finite number"),
        ("1,inf\n", "line 1: a=1, b=inf is not a finite number"),
        ("1,1e300\n", "line 1: a=1, b=1e+300 is beyond what a float64 model can represent"),
    ],
)
def test_a_bad_input_line_is_named_before_tensorflow_starts(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    code, out, err = _run(["predict", "add", "--input", str(csv), "--storage", url], capsys)
    assert code == 2 and message in err and not out
    assert len(err.strip().splitlines()) == 1


def test_predict_argument_mistakes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["predict", "add"], "give the inputs"),
        (["predict", "add", "1", "2", "--input", "-"], "not both"),
        (["predict", "add", "--input", "missing.csv"], "is not a file"),
        (["predict", "divide", "1", "0"], "divide is not defined at a=1, b=0"),
    ):
        code, _, err = _run([*argv, "--storage", url], capsys)
        assert code == 2 and message in err, err


def test_best_and_models_speak_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["best", "--format", "json", "--storage", url], capsys)
    rows = json.loads(out)
    assert code == 0 and [r["operation"] for r in rows] == ["add", "multiply"]
    code, alias, _ = _run(["best", "--json", "--storage", url], capsys)
    assert json.loads(alias) == rows
    code, out, _ = _run(["models", "add", "--format", "json", "--storage", url], capsys)
    (row,) = json.loads(out)
    assert code == 0 and row["version"] == 1 and row["is_best"] is True
    assert len(row["sha256"]) == 64 and "metrics" in row and "created_at" in row


def test_the_public_api_hands_out_the_best_few_models_with_one_keyword(url: str) -> None:
    import inspect

    import numpy as np

    import sweep
    from sweep.nets.training import predict

    promote(url, "add", exact_add(bias=0.5), 0.5)  # version 2, better: ranked first
    models = sweep.load_best_models("add", top_k=5, storage=url)
    assert len(models) == 2
    assert predict(models[0], np.array([[2.0, 3.0]])).tolist() == [5.5]
    assert predict(models[1], np.array([[2.0, 3.0]])).tolist() == [5.0]
    assert len(sweep.load_best_models("add", top_k=1, storage=url)) == 1
    with pytest.raises(sweep.ConfigError, match="top_k"):
        sweep.load_best_models("add", top_k=0, storage=url)
    batch = sweep.predict_many("add", [[1, 2], [3, 4]], storage=url)
    assert batch.version == 2 and batch.answers.tolist() == [4.0, 8.0]
    assert [e.operation for e in sweep.best_models(storage=url)] == ["add", "multiply"]
    assert [e.version for e in sweep.model_history("add", storage=url)] == [1, 2]
    # Every function that touches a database takes it as storage=; reading a campaign file
    # touches none.
    for name in sweep.__all__:
        value = getattr(sweep, name)
        if inspect.isfunction(value) and name != "campaign_from_toml":
            assert "storage" in inspect.signature(value).parameters, name


def test_predict_parses_its_url_once_and_holds_one_engine(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving the operation, fetching the model and answering share one database handle
    (before it, one `sweep predict` opened three registries, each with its own engine)."""
    import sqlalchemy

    import storage.urls

    engines: list[object] = []
    parses: list[str] = []
    real_engine, real_parse = sqlalchemy.create_engine, storage.urls.make_url  # type: ignore[attr-defined]

    def counting_engine(*args: object, **kwargs: object) -> sqlalchemy.Engine:
        engines.append(args[0])
        return real_engine(*args, **kwargs)  # type: ignore[call-overload, no-any-return]

    def counting_parse(text: str) -> sqlalchemy.URL:
        parses.append(text)
        return real_parse(text)

    monkeypatch.setattr(sqlalchemy, "create_engine", counting_engine)
    monkeypatch.setattr(storage.urls, "make_url", counting_parse)
    code, out, err = _run(["predict", "multiply", "12", "34", "--storage", url], capsys)
    assert code == 0, err
    assert "= 408" in out
    assert len(engines) == 1, engines
    assert len(parses) == 1, parses
