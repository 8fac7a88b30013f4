"""The expression grammar: named inputs, constants, functions, % and //, and its refusals."""

from __future__ import annotations

import ast
import builtins
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep.errors import ExpressionError
from sweep.problem.expressions import (
    EXPRESSION_GRAMMAR,
    MAX_EXPRESSION_LENGTH,
    MAX_EXPRESSION_NODES,
    MAX_INPUTS,
    parse_expression,
)


@pytest.fixture
def strict_warnings() -> Iterator[None]:
    """Any numpy (or other) warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _refusal(text: str) -> str:
    with pytest.raises(ExpressionError) as excinfo:
        parse_expression(text)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        ("n*R*T/V", ("n", "R", "T", "V")),
        ("b*a", ("b", "a")),
        ("a*b+a", ("a", "b")),
        ("V*V + T", ("V", "T")),
        ("sin(theta) * r", ("theta", "r")),
        ("max(x2, x1) - min(x1, x2)", ("x2", "x1")),
        ("pi * r**2", ("r",)),
        ("e**k + E", ("k", "E")),
        ("Pi + PI + pi", ("Pi", "PI")),
        ("Sin + sin(1)", ("Sin",)),
        ("m_1 + m1 + M1", ("m_1", "m1", "M1")),
        ("x" * 32 + " + 1", ("x" * 32,)),
        ("2 + 3", ()),
        ("(((q)))", ("q",)),
    ],
)
def test_variables_are_the_inputs_in_order_of_first_appearance(
    text: str, variables: tuple[str, ...]
) -> None:
    assert parse_expression(text).variables == variables


def test_ten_inputs_are_allowed_and_eleven_are_not() -> None:
    ten = [f"x{i}" for i in range(MAX_INPUTS)]
    assert parse_expression("+".join(ten)).variables == tuple(ten)
    message = _refusal("+".join([*ten, "y"]))
    assert "uses 11 inputs" in message and f"the limit is {MAX_INPUTS}" in message
    assert "x0" in message


def test_a_physics_formula_with_long_names_fits() -> None:
    text = (
        "(pressure_ratio * volume_initial - gas_constant * temperature_kelvin) "
        "/ (amount_of_substance * gas_constant) + sqrt(abs(pressure_ratio)) * "
        "log(volume_initial / volume_final) - exp(-temperature_kelvin / temperature_ref)"
    )
    assert 200 < len(text) <= MAX_EXPRESSION_LENGTH == 400
    parsed = parse_expression(text)
    assert len(parsed.variables) == 7


# --------------------------------------------------------------------------------------------
# Values


_X = np.array([-0.9, -0.5, 0.0, 0.3, 0.8])
_Y = np.array([0.7, -0.6, 0.2, 0.3, -2.0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sqrt(x)", np.sqrt(np.abs(_X))),
        ("exp(x)", np.exp(_X)),
        ("log(x)", np.log(np.abs(_X) + 1)),
        ("sin(x)", np.sin(_X)),
        ("cos(x)", np.cos(_X)),
        ("tan(x)", np.tan(_X)),
        ("arcsin(x)", np.arcsin(_X)),
        ("arccos(x)", np.arccos(_X)),
        ("arctan(x)", np.arctan(_X)),
        ("tanh(x)", np.tanh(_X)),
        ("abs(x)", np.abs(_X)),
        ("min(x, y)", np.minimum(_X, _Y)),
        ("max(x, y)", np.maximum(_X, _Y)),
        ("pi + 0*x", np.full(5, math.pi)),
        ("e + 0*x", np.full(5, math.e)),
        ("2*pi*x", 2 * np.pi * _X),
        ("e**x", np.e**_X),
    ],
)
def test_each_function_and_constant_matches_numpy(
    text: str, expected: np.ndarray, strict_warnings: None
) -> None:
    parsed = parse_expression(text)
    # sqrt and log are checked on their domain: their argument is made non-negative here.
    x = np.abs(_X) + (1 if text == "log(x)" else 0) if text in ("sqrt(x)", "log(x)") else _X
    result = parsed.evaluate_columns({"x": x, "y": _Y})
    assert result.dtype == np.float64 and result.shape == (5,)
    np.testing.assert_allclose(result, expected, rtol=1e-15)


def test_pi_and_e_are_numpys_float64_constants() -> None:
    assert parse_expression("pi").variables == parse_expression("e").variables == ()
    assert float(parse_expression("pi").evaluate_columns({})) == np.pi
    assert float(parse_expression("e").evaluate_columns({})) == np.e


_MOD_VALUES = [-7.0, -3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0, 7.0, 10.0]
_DIVISORS = [-4.0, -3.0, -1.5, -1.0, 1.0, 1.5, 2.0, 3.0]


@pytest.mark.parametrize(
    ("text", "python"), [("a % b", float.__mod__), ("a // b", float.__floordiv__)]
)
def test_mod_and_floor_division_follow_python(
    text: str, python: Any, strict_warnings: None
) -> None:
    a = np.array([x for x in _MOD_VALUES for _ in _DIVISORS])
    b = np.array([y for _ in _MOD_VALUES for y in _DIVISORS])
    result = parse_expression(text).evaluate_columns({"a": a, "b": b})
    expected = [python(float(x), float(y)) for x, y in zip(a, b, strict=True)]
    assert result.tolist() == expected


@pytest.mark.parametrize(
    ("text", "a", "expected"),
    [
        ("-a % 3", 7, 2.0),
        ("a % -3", 7, -2.0),
        ("-a // 2", 7, -4.0),
        ("a // -2", 7, -4.0),
        ("a % 3 + a // 3 * 3", 17, 17.0),
        ("2**a**2", 3, 512.0),
        ("-a**2", 2, -4.0),
        ("-a % 3 * 2", 7, 4.0),
    ],
)
def test_precedence_and_signs_are_pythons(text: str, a: float, expected: float) -> None:
    assert parse_expression(text).evaluate_columns({"a": [a]}).tolist() == [expected]


# --------------------------------------------------------------------------------------------
# Undefined points


@pytest.mark.parametrize(
    ("text", "x", "defined"),
    [
        ("sqrt(x)", [-1.0, 0.0, 4.0], [False, True, True]),
        ("log(x)", [0.0, -1.0, 1.0], [False, False, True]),
        ("arcsin(x)", [2.0, -1.5, 1.0], [False, False, True]),
        ("arccos(x)", [1.0001, 0.5], [False, True]),
        ("x % 0", [1.0, 0.0, -2.0], [False, False, False]),
        ("x // 0", [1.0, 0.0, -2.0], [False, False, False]),
        ("1 % (x - 1)", [1.0, 2.0], [False, True]),
        ("1 // (x - 1)", [1.0, 3.0], [False, True]),
        ("x % (x - x)", [5.0], [False]),
        ("exp(x)", [1000.0, 1.0], [False, True]),
        # Undefined inside, although the outer function would map it to something finite.
        ("tanh(log(x))", [0.0, 1.0], [False, True]),
        ("arctan(1/x)", [0.0, 1.0], [False, True]),
        ("min(1/x, 2)", [0.0, 1.0], [False, True]),
        ("exp(exp(exp(exp(x))))", [10.0, 0.0], [False, True]),
    ],
)
def test_undefined_points_are_nan_without_warnings(
    text: str, x: list[float], defined: list[bool], strict_warnings: None
) -> None:
    result = parse_expression(text).evaluate_columns({"x": np.array(x)})
    assert np.isfinite(result).tolist() == defined
    assert np.isnan(result[~np.array(defined)]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_gives_nan(bad: float, strict_warnings: None) -> None:
    result = parse_expression("min(x, 0) * 0 + y").evaluate_columns(
        {"x": np.array([bad, 1.0]), "y": np.array([2.0, 2.0])}
    )
    assert np.isnan(result[0]) and result[1] == 2.0


def test_a_huge_function_tower_is_undefined_not_a_hang() -> None:
    started = time.perf_counter()
    parsed = parse_expression("exp(exp(exp(exp(9**9**9**9))))")
    assert np.isnan(parsed.evaluate_columns({})).all()
    assert time.perf_counter() - started < 1.0


# --------------------------------------------------------------------------------------------
# Evaluation API


def test_evaluate_columns_broadcasts_and_ignores_extra_columns(strict_warnings: None) -> None:
    parsed = parse_expression("x * y + 1")
    result = parsed.evaluate_columns(
        {"x": np.array([[1.0], [2.0]]), "y": [10, 20, 30], "label": ["not", "a", "number"]}
    )
    assert result.dtype == np.float64
    assert result.tolist() == [[11.0, 21.0, 31.0], [21.0, 41.0, 61.0]]


def test_evaluate_columns_names_a_missing_variable() -> None:
    with pytest.raises(ValueError, match="uses T, V"):
        parse_expression("n*R*T/V").evaluate_columns({"n": 1, "R": 2})


def test_evaluate_keeps_working_for_a_and_b(strict_warnings: None) -> None:
    parsed = parse_expression("b*a")
    a, b = np.array([3.0, 4.0]), np.array([2.0, np.nan])
    assert parsed.evaluate(a, b)[0] == 6.0
    assert np.isnan(parsed.evaluate(a, b)[1])
    np.testing.assert_array_equal(
        parsed.evaluate(a, b), parsed.evaluate_columns({"a": a, "b": b})
    )
    # A given b shapes the result and must be finite, as always, even when unused.
    assert np.isnan(parse_expression("a + 1").evaluate(a, b)).tolist() == [False, True]
    with pytest.raises(ValueError, match="uses b"):
        parsed.evaluate(a)
    with pytest.raises(ValueError, match="uses x, not only a and b"):
        parse_expression("a + x").evaluate(a, b)


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("text", "named"),
    [
        # Unknown functions, whatever the name.
        ("foo(a)", "unknown function 'foo'; allowed:"),
        ("open('f')", "unknown function 'open'"),
        ("a(2)", "unknown function 'a'"),
        ("Sin(a)", "unknown function 'Sin'"),
        ("__import__('os')", "unknown function '__import__'"),
        # Calling anything but a function's name.
        ("__import__('os').system('x')", "calling attribute access \"__import__('os').system\""),
        ("np.sin(a)", "calling attribute access 'np.sin'"),
        ("a[0](1)", "calling subscripting 'a[0]'"),
        ("sin(a)(b)", "calling the result of a function call 'sin(a)'"),
        ("pi(2)", "calling the constant 'pi'"),
        ("e(a)", "calling the constant 'e'"),
        ("2(a)", "calling the constant '2'"),
        ("(lambda: 1)()", "calling a lambda"),
        # Wrong argument counts, keywords, unpacking.
        ("sin(a, b)", "sin takes 1 argument, got 2"),
        ("sqrt()", "sqrt takes 1 argument, got 0"),
        ("min(a)", "min takes 2 arguments, got 1"),
        ("max(a, b, c)", "max takes 2 arguments, got 3"),
        ("sin(x=a)", "the keyword argument 'x' in 'sin(x=a)'"),
        ("min(a, b, key=a)", "the keyword argument 'key'"),
        ("sin(*a)", "unpacking (*) in 'sin(*a)'"),
        ("min(**a)", "unpacking (**) in 'min(**a)'"),
        # A function used as a value.
        ("sin + 1", "'sin' is a function and must be called, as in sin(x)"),
        ("a * max", "'max' is a function and must be called, as in max(x, y)"),
        ("sqrt(log)", "'log' is a function and must be called"),
        # Names that are not inputs.
        ("_x + 1", "the name '_x'"),
        ("__class__", "the name '__class__'"),
        ("x" * 33, "the name '" + "x" * 33 + "'"),
        ("é + 1", "the name 'é'"),
        ("π * r", "the name 'π'"),
        ("\uff41 + 1", "the name '\uff41'"),  # fullwidth a, which Python folds to a
        ("\ufb01 + 1", "the name '\ufb01'"),  # the fi ligature, which Python folds to fi
        # Other constructs, operators and constants.
        ("a.real", "attribute access"),
        ("a[0]", "subscript"),
        ("a if b else c", "conditional"),
        ("a < b", "comparison"),
        ("a @ b", "'@'"),
        ("a ^ 2", "'^' (write powers as **)"),
        ("a << 1", "'<<'"),
        ("~a", "'~'"),
        ("[a]", "list"),
        ("(x := a)", "assignment"),
        ("'s'", "string"),
        ("True", "boolean"),
        ("1j * a", "complex"),
        ("2000000 * a", "too large"),
        ("a;b", "syntax"),
        ("a\x1b[31m", "control character"),
        ("", "empty"),
        ("a+" * 201 + "a", "403 characters long; the limit is 400"),
    ],
)
def test_refusals_name_the_offending_thing(text: str, named: str) -> None:
    message = _refusal(text)
    assert named in message
    assert len(message) < 400


def test_grammar_refusals_end_with_the_one_line_grammar() -> None:
    assert "\n" not in EXPRESSION_GRAMMAR and len(EXPRESSION_GRAMMAR) < 220
    for word in ("pi", "e", "//", "%", "sqrt", "arctan", "tanh", "abs", "min", "max", "m1"):
        assert word in EXPRESSION_GRAMMAR.replace(",", " ").split()
    assert _refusal("foo(a)").endswith(EXPRESSION_GRAMMAR)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("sin(" * 200 + "a" + ")" * 200, "characters long"),
        ("sin(" * 60 + "a" + ")" * 60, "operands and operators"),
        ("-" * 399 + "a", "operands and operators"),
        ("(" * 198 + "sin" + ")" * 198, "must be called"),
        ("(" * 200 + ")" * 200, "tuple"),
        ("(" * 400 + "a", "characters long"),
        ("(" * 250 + "a", "syntax"),
        ("[" * 150 + "a" + "]" * 150, "list"),
        ("+".join(["a"] * 60), "operands and operators"),
    ],
)
def test_deep_or_big_expressions_are_refused_cleanly(text: str, named: str) -> None:
    assert named in _refusal(text)


def test_the_deepest_allowed_nesting_evaluates(strict_warnings: None) -> None:
    depth = (MAX_EXPRESSION_NODES - 1) // 2
    parsed = parse_expression("sin(" * depth + "a" + ")" * depth)
    result = parsed.evaluate_columns({"a": np.array([0.5])})
    assert np.isfinite(result).all()
    assert parse_expression("(" * 190 + "a" + ")" * 190).variables == ("a",)


# --------------------------------------------------------------------------------------------
# The integer flag


@pytest.mark.parametrize(
    ("text", "integer_valued"),
    [
        ("a // b", True),
        ("a % 3", True),
        ("(a*b) // (a - 1) % 7", True),
        ("abs(a - b)", True),
        ("min(a, b) * max(a, 2)", True),
        ("abs(min(a, -b)) ** 2", True),
        ("a % 2.5", False),
        ("(a / b) // 1", False),
        ("abs(a / 2)", False),
        ("min(a, 0.5)", False),
        ("sqrt(a)", False),
        ("exp(0)", False),
        ("sin(a) * 0", False),
        ("pi", False),
        ("e * a", False),
        ("a ** e", False),
        ("PI * a", True),  # an input, not the constant
    ],
)
def test_integer_flag_covers_the_new_constructs(text: str, integer_valued: bool) -> None:
    assert parse_expression(text).integer_valued is integer_valued


# --------------------------------------------------------------------------------------------
# Safety


def test_nothing_is_eval_exec_or_compiled_to_code(monkeypatch: pytest.MonkeyPatch) -> None:
    real_compile = builtins.compile

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec must never be used")

    def ast_only(source: Any, filename: Any, mode: str, flags: int = 0, *args: Any,
                 **kwargs: Any) -> Any:
        # ast.parse is compile(..., flags=PyCF_ONLY_AST): a tree, never a code object.
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError("nothing may be compiled to a code object")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", ast_only)
    parsed = parse_expression("max(n*R*T/V, 0) % 7 + sqrt(abs(a)) // 1 + pi*e")
    result = parsed.evaluate_columns({"n": 2, "R": 3, "T": 4, "V": 1, "a": -16})
    assert result.tolist() == pytest.approx(24 % 7 + 4 + math.pi * math.e)
    with pytest.raises(ExpressionError):
        parse_expression("__import__('os').system('x')")


_FUZZ_ALPHABET = "abxyTe0123456789._+-*/%() ,sqrtlogminaxpi\u00e9"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_FUZZ_ALPHABET, max_size=60))
def test_any_text_parses_and_evaluates_or_is_one_refusal_line(text: str) -> None:
    try:
        parsed = parse_expression(text)
    except ExpressionError as error:
        assert "\n" not in str(error)
        return
    columns = {name: np.arange(-2.0, 3.0) * (i + 1) for i, name in enumerate(parsed.variables)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = parsed.evaluate_columns(columns)
    assert result.dtype == np.float64 and not np.isinf(result).any()
    if parsed.variables:
        assert result.shape == (5,)
    if parsed.integer_valued:  # the inputs are integers
        exact = result[np.isfinite(result) & (np.abs(result) < 2.0**53)]
        assert (exact == np.round(exact)).all()
