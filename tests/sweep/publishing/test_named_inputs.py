"""Operations of 1 to 10 named inputs, read back: `best`/`models` JSON, `sweep predict` by name
or in order (one row or a file with a header), the rounding rule, the 2**53 warning, tables
(no formula, so no exact value) and the Python API; and the request shapes `sweep serve` takes
(`parse_instances`), checked without a server (tests/sweep/publishing/test_named_serving.py
runs the real one).

The models are hand-built with the sweep's own layers (exact: ``exp(log n + log R + log T -
log V)``), promoted into a real SQLite registry under a stored campaign with real ranges, so
each test has known answers in seconds.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from _hand_models import exact_add, exact_multiply, promote

import sweep
from storage import Database
from sweep.cli import main
from sweep.errors import ConfigError
from sweep.nets.normalization import NormalizationParams
from sweep.nets.spec import ModelSpec
from sweep.nets.training import build
from sweep.problem.operations import BUILTIN_OPERATIONS, make_operation, make_table_operation
from sweep.publishing.lookup import resolve_operation
from sweep.publishing.models import (
    Prediction,
    Predictions,
    arrange_named,
    as_rows,
    check_inputs,
    check_pairs,
    rounded_rows,
)
from sweep.publishing.serve import RequestError, parse_instances, parse_request
from sweep.publishing.summary import history_json, json_rows, operations_for
from sweep.search.config import config_from_toml

CAMPAIGN_TOML = """
[campaign]
operations = ["gas", "add"]
trials = 3
[expressions]
gas = "n*R*T/V"
[inputs.gas]
n = { low = 1, high = 5, kind = "real" }
R = { low = 8, high = 9, kind = "real" }
T = { low = 250, high = 350, kind = "real" }
V = { low = 1, high = 10, kind = "real" }
[inputs.add]
a = { low = 0, high = 1, kind = "real" }
[datasets]
ohm = { file = "ohm.csv", target = "U" }
"""
OHM_CSV = "I,R,U\n" + "".join(
    f"{i / 4},{r},{i / 4 * r}\n" for i in range(1, 6) for r in (1, 3, 7, 10)
)


def _log_product(exponents: tuple[float, ...]) -> keras.Model:
    """exp(sum_i e_i log|x_i|): exact for products and quotients (gas: 1, 1, 1, -1)."""
    arity = len(exponents)
    inputs = NormalizationParams("log_abs", "log_abs", (0.0,) * arity, (1.0,) * arity)
    target = NormalizationParams("log_abs", "log_abs", (0.0,), (1.0,))
    spec = ModelSpec((), "linear", "log_abs", "log_abs", 1e-3, 32, "mse", 1, "constant", False)
    built = build(spec, arity, inputs, target)
    built.output_layer.set_weights(
        [np.asarray(exponents, dtype="float64").reshape(-1, 1), np.zeros(1, "float64")]
    )
    return built.exported


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Campaign 'arith': gas over real ranges, add over a real range (so not integer-valued),
    the table ohm (I, R -> U); and campaign 'ints' storing nothing (built-ins as ever)."""
    folder = tmp_path_factory.mktemp("named")
    (folder / "ohm.csv").write_text(OHM_CSV)
    from sweep.search.config import load_toml

    (folder / "c.toml").write_text(CAMPAIGN_TOML)
    config = config_from_toml(load_toml(folder / "c.toml"), base_dir=folder)
    url = f"sqlite:///{folder / 'sweeps.db'}"
    with Database(url) as database:
        assert database.campaigns.save("arith", config.to_dict())
    promote(url, "gas", _log_product((1.0, 1.0, 1.0, -1.0)), 1.0)
    promote(url, "ohm", _log_product((1.0, 1.0)), 1.0)
    promote(url, "add", exact_add(), 1.0)
    promote(url, "add", exact_add(), 1.0, campaign="ints")
    promote(url, "multiply", exact_multiply(), 1.0, campaign="ints")
    return url


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("sweep: error: ", "sweep predict: error:")), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


GAS = make_operation("gas", "n*R*T/V")
OHM = make_table_operation("ohm", ("I", "R"), "U", integer_valued=False)


# --- the rules, without storage ----------------------------------------------------------------


def test_an_answer_is_rounded_only_for_integer_valued_operations_on_whole_inputs() -> None:
    x = np.array([[2.0, 3.0], [0.1, 0.2], [1.5, 2.5], [-0.0, 7.0], [np.nan, 1.0]])
    assert rounded_rows(x, True).tolist() == [True, False, False, True, False]
    assert not rounded_rows(x, False).any()
    batch = Predictions("add", 1, x[:4], np.array([5.0001, 0.30000000000000004, 3.75, 7.2]),
                        None, True, ("a", "b"))
    assert batch.answers.tolist() == [5.0, 0.30000000000000004, 3.75, 7.0]
    big = Prediction("multiply", (123456789.0, 987654321.0), 1.2193263111263568e17, None, True)
    assert big.rounded and big.beyond_2_53 and not Prediction(
        "add", (2.0, 3.0), 5.0, 5.0, True).beyond_2_53
    assert Prediction("add", (0.1, 0.2), 0.30000000000000004, 0.3, True).answer != 0.0


def test_inputs_by_name_are_put_in_order_and_every_mistake_is_named() -> None:
    named = {"V": 2, "T": 300, "n": 1.5, "R": 8.3}
    assert check_inputs(GAS, named=named) == (1.5, 8.3, 300.0, 2.0)
    assert check_inputs(GAS, 1.5, 8.3, 300, 2) == (1.5, 8.3, 300.0, 2.0)
    with pytest.raises(ConfigError, match=r"gas has no input 'x'; its inputs are n, R, T, V"):
        check_inputs(GAS, named={**named, "x": 1})
    with pytest.raises(ConfigError, match=r"no value for gas's input V; its inputs are n, R"):
        check_inputs(GAS, named={"n": 1, "R": 1, "T": 1})
    with pytest.raises(ConfigError, match=r"input 'n' is given twice"):
        arrange_named(GAS, [("n", 1), ("n", 2), ("R", 1), ("T", 1), ("V", 1)])
    with pytest.raises(ConfigError, match=r"gas takes 4 inputs \(n, R, T, V\), got 2"):
        check_inputs(GAS, 1, 2)
    with pytest.raises(ConfigError, match=r"gas is not defined at n=1, R=1, T=1, V=0"):
        check_inputs(GAS, named={"n": 1, "R": 1, "T": 1, "V": 0})
    with pytest.raises(ConfigError, match=r"row 2: n=1, R=nan, T=1, V=1 is not a finite"):
        check_pairs(GAS, np.array([[1, 1, 1, 1], [1, np.nan, 1, 1]], dtype=np.float64))


def test_named_columns_become_rows_in_input_order() -> None:
    columns = {"T": [300, 250], "V": [2, 1], "R": [8.3, 8], "n": [1.5, 1]}
    assert as_rows(GAS, columns).tolist() == [[1.5, 8.3, 300, 2], [1, 8, 250, 1]]

    class Frame:  # what pandas.DataFrame offers: keys() and [column]
        def keys(self) -> list[str]:
            return list(columns)

        def __getitem__(self, key: str) -> list[float]:
            return columns[key]  # type: ignore[return-value]

    assert as_rows(GAS, Frame()).tolist() == [[1.5, 8.3, 300, 2], [1, 8, 250, 1]]
    with pytest.raises(ConfigError, match=r"the columns differ in length \(n: 2, R: 2, T: 1"):
        as_rows(GAS, {**columns, "T": [300]})
    with pytest.raises(ConfigError, match="no value for gas's column V"):
        as_rows(GAS, {k: v for k, v in columns.items() if k != "V"})


def test_a_table_has_no_domain_and_no_formula() -> None:
    check_pairs(OHM, np.array([[0.0, -5.0], [1e9, 0.0]]))  # any finite row
    with pytest.raises(ConfigError, match="I=inf, R=1 is not a finite number"):
        check_pairs(OHM, np.array([[np.inf, 1.0]]))
    assert check_inputs(OHM, named={"R": 0, "I": 3}) == (3.0, 0.0)


# --- the request shapes of `sweep serve` ------------------------------------------------------


def _refused(body: object) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestError) as caught:
        parse_instances(raw, GAS)
    assert caught.value.status == 400
    return caught.value.message


def test_serving_takes_rows_named_instances_and_named_columns() -> None:
    rows: list[list[float]] = [[1.5, 8.3, 300, 2], [1, 8, 250, 1]]
    expected = np.asarray(rows, dtype=np.float64)
    named = [dict(zip(GAS.inputs, row, strict=True)) for row in rows]
    shuffled = [{k: d[k] for k in ("V", "T", "n", "R")} for d in named]
    for body, columnar in (
        ({"instances": rows}, False),
        ({"instances": named}, False),
        ({"instances": shuffled, "signature_name": "serving_default"}, False),
        ({"instances": [rows[0], named[1]]}, False),
        ({"inputs": {"T": [300, 250], "V": [2, 1], "n": [1.5, 1], "R": [8.3, 8]}}, True),
        ({"inputs": rows}, True),
    ):
        asked = parse_request(json.dumps(body).encode(), GAS)
        assert np.array_equal(asked.x, expected) and asked.columnar == columnar, body
        assert not asked.answers
    one = parse_request(b'{"inputs": {"n": 1.5, "R": 8.3, "T": 300, "V": 2}, "answers": true}',
                        GAS)
    assert one.x.tolist() == [rows[0]] and one.answers
    unary = make_operation("cube", "a*a*a")
    assert parse_instances(b'{"instances": [1, 2, [3]]}', unary).tolist() == [[1], [2], [3]]
    assert parse_instances(b'{"instances": [{"a": 4}]}', unary).tolist() == [[4]]


def test_serving_takes_the_signatures_input_by_its_name_as_tf_serving_does() -> None:
    """The metadata names one input, ``operands`` (n, arity): a TF Serving client that builds
    its request from it sends ``{"instances": [{"operands": row}]}`` or ``{"inputs":
    {"operands": rows}}``, and gets the same answers as from rows or names."""
    rows: list[list[float]] = [[1.5, 8.3, 300, 2], [1, 8, 250, 1]]
    expected = np.asarray(rows, dtype=np.float64)
    accepted: list[tuple[object, bool]] = [
        ({"instances": [{"operands": row} for row in rows]}, False),
        (
            {"instances": [{"operands": rows[0]}, dict(zip(GAS.inputs, rows[1], strict=True))]},
            False,
        ),
        ({"inputs": {"operands": rows}, "signature_name": "serving_default"}, True),
    ]
    for body, columnar in accepted:
        asked = parse_request(json.dumps(body).encode(), GAS)
        assert np.array_equal(asked.x, expected) and asked.columnar == columnar, body
    unary = make_operation("cube", "a*a*a")
    assert parse_instances(
        b'{"instances": [{"operands": 4}, {"operands": [5]}]}', unary
    ).tolist() == [[4], [5]]
    # An input really named so keeps its meaning.
    named = make_operation("twice", "operands*2")
    assert parse_instances(b'{"instances": [{"operands": 4}]}', named).tolist() == [[4]]
    refused: list[tuple[object, str]] = [
        ({"instances": [{"operands": [1, 8, 250]}]}, "instance 1: gas takes 4 number(s)"),
        ({"instances": [{"operands": [1, 8, 250, "1"]}]}, 'instance 1: "1" is not a number'),
        ({"instances": [{"operands": [1, 8, 250, 1], "n": 1}]}, "gas has no input 'operands'"),
        ({"inputs": {"operands": [[1, 8, 250, 0]]}}, "gas is not defined at"),
        (
            b'{"instances": [{"operands": [1, 8, 250, 1], "operands": [1, 8, 250, 2]}]}',
            "'operands' is given twice",
        ),
        (
            b'{"inputs": {"operands": [[1, 8, 250, 1]], "operands": [[1, 8, 250, 2]]}}',
            "'operands' is given twice",
        ),
    ]
    for body, fragment in refused:
        message = _refused(body)
        assert fragment in message and "\n" not in message, (body, message)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [{"n": 1, "R": 1, "T": 1, "V": 1, "x": 2}]},
         "instance 1: gas has no input 'x'; its inputs are n, R, T, V"),
        ({"instances": [[1, 1, 1, 1], {"n": 1, "R": 1, "T": 1}]},
         "instance 2: no value for gas's input V; its inputs are n, R, T, V"),
        (b'{"instances": [{"n": 1, "R": 1, "T": 1, "V": 1, "n": 2}]}', "'n' is given twice"),
        (b'{"inputs": {"n": [1], "R": [1], "T": [1], "V": [1], "V": [2]}}', "'V' is given twice"),
        ({"instances": [[1, 1, 1]]}, "instance 1: gas takes 4 number(s) per instance"),
        ({"instances": [{"n": "1", "R": 1, "T": 1, "V": 1}]}, 'instance 1: "1" is not a number'),
        ({"instances": [{"n": True, "R": 1, "T": 1, "V": 1}]}, "instance 1: true is not a number"),
        ({"inputs": {"n": [1, 2], "R": [1], "T": [1], "V": [1]}},
         "all of one length (n: 2, R: 1, T: 1, V: 1)"),
        ({"inputs": {"n": [1], "R": [1], "T": [1]}}, "\"inputs\": no value for gas's input V"),
        ({"inputs": {"n": [1], "R": [1], "T": [1], "V": [0]}}, "gas is not defined at"),
        ({"instances": [[1, 1, 1, 1]], "inputs": {"n": [1]}}, "not both"),
        ({"instances": [[1, 1, 1, 1]], "signature_name": [1]}, "must be a string"),
        ({"instances": [[1, 1, 1, 1]], "answers": 1}, '"answers" must be true or false'),
        ({"rows": [[1, 1, 1, 1]]}, 'expected a JSON object {"instances": [[n, R, T, V], ...]}'),
        ({"instances": [{"n": 2**53 + 1, "R": 1, "T": 1, "V": 1}]}, "beyond what a float64"),
    ],
)
def test_serving_refuses_a_wrong_name_in_one_line_naming_it(body: object, fragment: str) -> None:
    message = _refused(body)
    assert fragment in message and "\n" not in message


def test_a_table_is_served_without_a_domain_check() -> None:
    assert parse_instances(b'{"instances": [{"R": 0, "I": -3}]}', OHM).tolist() == [[-3, 0]]


# --- the registry read back ---------------------------------------------------------------------


def test_best_and_models_json_name_each_operations_inputs_and_integer_flag(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["best", "--format", "json", "--storage", url], capsys)
    assert code == 0, err
    rows = {r["operation"]: r for r in json.loads(out)}
    assert rows["gas"]["inputs"] == ["n", "R", "T", "V"]
    assert rows["gas"]["integer_valued"] is False
    assert rows["ohm"]["inputs"] == ["I", "R"] and rows["ohm"]["integer_valued"] is False
    # add over a real range: not integer-valued, decided from its data, not its name.
    assert rows["add"]["inputs"] == ["a", "b"] and rows["add"]["integer_valued"] is False
    code, out, _ = _run(["best", "--json", "--campaign", "ints", "--storage", url], capsys)
    ints = {r["operation"]: r for r in json.loads(out)}
    assert ints["add"]["integer_valued"] is True and ints["multiply"]["inputs"] == ["a", "b"]
    code, out, _ = _run(["models", "gas", "--format", "json", "--storage", url], capsys)
    (row,) = json.loads(out)
    assert code == 0 and row["inputs"] == ["n", "R", "T", "V"] and row["integer_valued"] is False


def test_the_tables_stay_narrow_and_the_inputs_are_listed_under_them(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(["best", "--storage", url], capsys)
    assert code == 0
    assert "gas(n, R, T, V): answers not rounded" in out
    assert "ohm(I, R): answers not rounded" in out
    code, out, _ = _run(["models", "--campaign", "ints", "--storage", url], capsys)
    listed = [line for line in out.splitlines() if line.startswith(("add(", "multiply("))]
    assert listed == [
        "add(a, b): answers rounded for whole-number inputs",
        "multiply(a, b): answers rounded for whole-number inputs",
    ]


def test_summary_rows_without_a_readable_campaign_still_list(url: str) -> None:
    with Database(url) as database:
        entries = database.registry.best_all("arith")
        operations = operations_for(database.campaigns, entries)
    assert {k[1]: v.inputs for k, v in operations.items() if v} == {
        "add": ("a", "b"), "gas": ("n", "R", "T", "V"), "ohm": ("I", "R")
    }
    assert json_rows(entries)[0].keys() == json_rows(entries, {})[0].keys() - {
        "inputs", "integer_valued"
    }
    assert json_rows(entries, {})[0]["inputs"] is None
    assert history_json(entries, {})[0]["integer_valued"] is None


def test_resolve_operation_gives_the_campaigns_inputs_and_ranges(url: str) -> None:
    with Database(url) as database:
        gas = resolve_operation(database.campaigns, "arith", "gas")
    assert gas.inputs == ("n", "R", "T", "V") and not gas.integer_valued
    assert [r.kind for r in gas.ranges] == ["real"] * 4


# --- sweep predict -------------------------------------------------------------------------


def test_predict_by_name_in_any_order_or_in_order(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        ["predict", "gas", "V=2", "n=1.5", "T=300", "R=8.3", "--storage", url], capsys
    )
    assert code == 0, err
    assert out.startswith("gas(n=1.5, R=8.3, T=300, V=2) = 1867.5 ")
    assert "version 1" in out and not err
    code, same, _ = _run(["predict", "gas", "1.5", "8.3", "300", "2", "--storage", url], capsys)
    assert same == out
    code, out, _ = _run(["predict", "gas", "n=1.5", "R=8.3", "T=300", "V=2", "--format",
                         "json", "--storage", url], capsys)
    body = json.loads(out)
    assert body["inputs"] == ["n", "R", "T", "V"] and body["instances"] == [[1.5, 8.3, 300, 2]]
    assert body["answers"][0] == pytest.approx(1867.5, rel=1e-12)
    assert body["rounded"] == [False] and body["beyond_2_53"] == [False]
    assert body["integer_valued"] is False


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["n=1.5", "R=8.3", "T=300"], ("no value for gas's input V", "inputs are n, R, T, V")),
        (["n=1", "R=1", "T=1", "V=1", "x=1"], ("gas has no input 'x'", "n, R, T, V")),
        (["n=1", "n=2", "R=1", "T=1", "V=1"], ("input 'n' is given twice", "(n, R, T, V)")),
        (["n=1", "R=1", "300", "V=1"], ("all in order (n, R, T, V) or all by name",)),
        (["1", "2"], ("gas takes 4 inputs (n, R, T, V), got 2",)),
        (["n=abc", "R=1", "T=1", "V=1"], ("input n: 'abc' is not a number",)),
        (["n=1", "R=1", "T=1", "V=0"], ("gas is not defined at n=1, R=1, T=1, V=0",)),
        ([], ("give the inputs: sweep predict gas n=.. R=.. T=.. V=..",)),
    ],
)
def test_predict_names_the_wrong_input_in_one_line(
    url: str, capsys: pytest.CaptureFixture[str], argv: list[str], fragments: tuple[str, ...]
) -> None:
    code, out, err = _run(["predict", "gas", *argv, "--storage", url], capsys)
    assert code == 2 and not out
    _one_error(err, *fragments)


def test_predict_a_file_maps_its_header_by_name(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("# gas, columns in any order\nV, T, R, n\n2, 300, 8.3, 1.5\n1 250 8 1\n")
    code, out, err = _run(["predict", "gas", "--input", str(rows), "--format", "json",
                           "--storage", url], capsys)
    assert code == 0, err
    body = json.loads(out)
    assert body["instances"] == [[1.5, 8.3, 300, 2], [1, 8, 250, 1]]
    assert body["answers"] == pytest.approx([1867.5, 2000.0], rel=1e-12)
    positional = tmp_path / "positional.csv"
    positional.write_text("1.5,8.3,300,2\n")
    code, out, _ = _run(["predict", "gas", "--input", str(positional), "--storage", url], capsys)
    assert code == 0 and float(out) == pytest.approx(1867.5, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("V,T,R,x\n2,300,8.3,1.5\n", ("line 1, column 4: 'x' is not an input of gas",
                                      "(its inputs: n, R, T, V)")),
        ("V,T,R\n2,300,8.3\n", ("line 1: the header has no column for n",)),
        ("V,T,V,n\n2,300,8.3,1\n", ("line 1, column 3: 'V' is named twice (also column 1)",)),
        ("V,T,R,n\n2,300,8.3,zz\n", ("line 2, column 4 (n): 'zz' is not a number",)),
        ("V,T,R,n\n2,300,8.3\n", ("line 2: expected 4 numbers (V, T, R, n), got 3",)),
        ("V,T,R,n\n0,300,8.3,1\n", ("line 2: gas is not defined at n=1, R=8.3, T=300, V=0",)),
    ],
)
def test_predict_a_bad_file_names_its_line_and_column(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
    fragments: tuple[str, ...],
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, out, err = _run(["predict", "gas", "--input", str(path), "--storage", url], capsys)
    assert code == 2 and not out
    _one_error(err, *fragments)


def test_a_table_operation_has_no_exact_value(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _run(["predict", "ohm", "R=10", "I=0.5", "--storage", url], capsys)
    assert code == 0, err
    assert out.startswith("ohm(I=0.5, R=10) = 5 ") and "exact n/a" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("R,I\n4,2.25\n0,-1\n"))
    code, out, err = _run(["predict", "ohm", "--input", "-", "--format", "json",
                           "--storage", url], capsys)
    assert code == 0, err
    body = json.loads(out)
    assert body["exact"] == [None, None] and body["instances"] == [[2.25, 4], [-1, 0]]
    assert body["answers"][0] == pytest.approx(9.0, rel=1e-12)


def test_no_answer_is_rounded_unless_every_input_is_whole(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ints = ["--campaign", "ints", "--storage", url]
    code, out, _ = _run(["predict", "add", "0.1", "0.2", *ints], capsys)
    assert code == 0 and out.startswith("add(0.1, 0.2) = 0.3 ")
    code, out, _ = _run(["predict", "multiply", "1.5", "2.5", *ints], capsys)
    assert out.startswith("multiply(1.5, 2.5) = 3.75 ")
    code, out, _ = _run(["predict", "add", "a=2", "b=3", *ints], capsys)
    assert out.startswith("add(2, 3) = 5 ")
    # add over a real range (campaign arith) is not integer-valued: 2 + 3 is not rounded.
    code, out, _ = _run(["predict", "add", "2", "3", "--format", "json", "--storage", url],
                        capsys)
    assert json.loads(out)["rounded"] == [False]


def test_an_answer_beyond_2_53_is_printed_with_a_warning(
    url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ints = ["--campaign", "ints", "--storage", url]
    code, out, err = _run(["predict", "multiply", "123456789", "987654321", *ints], capsys)
    assert code == 0
    assert out.startswith("multiply(123456789, 987654321) = 1219326311126")
    (warning,) = err.splitlines()
    assert warning.startswith("warning: multiply(123456789, 987654321) = ")
    assert "beyond 2**53 = 9007199254740992" in warning and "not exact" in warning
    code, out, err = _run(["predict", "multiply", "123456789", "987654321", "--format", "json",
                           *ints], capsys)
    body = json.loads(out)
    assert body["beyond_2_53"] == [True] and body["rounded"] == [True]
    path = tmp_path / "big.csv"
    path.write_text("2,3\n123456789,987654321\n4e9,4e9\n")
    code, out, err = _run(["predict", "multiply", "--input", str(path), *ints], capsys)
    assert out.splitlines()[0] == "6"
    (warning,) = err.splitlines()
    assert warning.startswith("warning: 2 answers are beyond 2**53") and "(lines 2, 3)" in warning


# --- the Python API ------------------------------------------------------------------------


def test_the_api_takes_rows_values_by_name_and_named_columns(url: str) -> None:
    one = sweep.predict("gas", {"T": 300, "n": 1.5, "R": 8.3, "V": 2}, storage=url)
    assert one.names == ("n", "R", "T", "V") and one.inputs == (1.5, 8.3, 300.0, 2.0)
    assert one.answer == pytest.approx(1867.5, rel=1e-12) and not one.rounded
    assert one.named_inputs == {"n": 1.5, "R": 8.3, "T": 300.0, "V": 2.0}
    assert sweep.predict("gas", 1.5, 8.3, 300, 2, storage=url).output == one.output
    columns = {"n": [1.5, 1], "R": [8.3, 8], "T": [300, 250], "V": [2, 1]}
    batch = sweep.predict_many("gas", columns, storage=url)
    assert batch.names == ("n", "R", "T", "V") and batch.column("T").tolist() == [300, 250]
    assert batch.answers == pytest.approx([1867.5, 2000.0], rel=1e-12)
    assert batch.exact is not None and batch.rounded.tolist() == [False, False]
    table = sweep.predict_many("ohm", [[0.5, 10]], storage=url)
    assert table.exact is None and table.row(0).exact is None
    with pytest.raises(ConfigError, match="gas has no input 'x'"):
        sweep.predict("gas", {"x": 1}, storage=url)
    square = sweep.predict("add", 2, 3, campaign="ints", storage=url)
    assert square.answer == 5.0 and square.rounded
    assert BUILTIN_OPERATIONS["add"].inputs == ("a", "b")


def test_a_loaded_model_takes_real_inputs_in_float64_when_called(url: str) -> None:
    """What README's "Using a model" says: calling the model (or `predict_on_batch`) keeps
    float64 inputs; Keras' `model.predict` converts them to floatx (float32) first, so 8.3
    arrives as 8.30000019. If Keras stops doing that, the README's warning can go."""
    model = sweep.load_best_model("gas", storage=url)
    x = np.array([[1.5, 8.3, 300.0, 2.0]])
    called = np.asarray(model(x), dtype=np.float64).reshape(-1)
    assert called[0] == pytest.approx(1867.5, rel=1e-13)
    assert np.array_equal(np.asarray(model.predict_on_batch(x)).reshape(-1), called)
    converted = model.predict(x, verbose=0).reshape(-1)
    float32_in = 1.5 * float(np.float32(8.3)) * 300 / 2
    assert converted[0] == pytest.approx(float32_in, rel=1e-12) and converted[0] != called[0]
