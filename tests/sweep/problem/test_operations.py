from __future__ import annotations

import builtins
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sweep.errors import ConfigError, ExpressionError
from sweep.problem.expressions import MAX_EXPRESSION_LENGTH, parse_expression
from sweep.problem.operations import (
    BUILTIN_OPERATIONS,
    Operation,
    make_operation,
    parse_expr_flag,
    resolve_operations,
)

BUILTIN_NAMES = ["add", "subtract", "multiply", "divide", "square", "sqrt"]


def _one_line_error(excinfo: pytest.ExceptionInfo[Exception]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# --------------------------------------------------------------------------------------------
# Built-ins


def test_builtins_are_the_six_in_order() -> None:
    assert list(BUILTIN_OPERATIONS) == BUILTIN_NAMES


@pytest.mark.parametrize(
    ("name", "a", "b", "expected"),
    [
        ("add", [2, -7, 0], [3, 7, 499], [5, 0, 499]),
        ("subtract", [2, -7, 0], [3, 7, 499], [-1, -14, -499]),
        ("multiply", [4, -3, 499], [-3, -3, 499], [-12, 9, 249001]),
        ("divide", [7, -9, 0], [2, 3, 5], [3.5, -3.0, 0.0]),
        ("square", [-4, 0, 499], None, [16, 0, 249001]),
        ("sqrt", [9, 0, 2], None, [3.0, 0.0, 2**0.5]),
    ],
)
def test_builtins_compute_known_values(
    name: str, a: list[int], b: list[int] | None, expected: list[float]
) -> None:
    result = BUILTIN_OPERATIONS[name].compute(np.array(a), None if b is None else np.array(b))
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, expected)


@pytest.mark.parametrize(
    ("name", "arity", "integer_valued"),
    [
        ("add", 2, True),
        ("subtract", 2, True),
        ("multiply", 2, True),
        ("divide", 2, False),
        ("square", 1, True),
        ("sqrt", 1, False),
    ],
)
def test_builtin_arity_and_integer_flags(name: str, arity: int, integer_valued: bool) -> None:
    operation = BUILTIN_OPERATIONS[name]
    assert (operation.arity, operation.integer_valued, operation.expression) == (
        arity,
        integer_valued,
        None,
    )


def test_undefined_results_are_nan_or_inf_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        divided = BUILTIN_OPERATIONS["divide"].compute(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
        rooted = BUILTIN_OPERATIONS["sqrt"].compute(np.array([-4.0]))
    assert np.isinf(divided[0]) and np.isnan(divided[1])
    assert np.isnan(rooted[0])


def test_divide_domain_excludes_zero_divisor() -> None:
    mask = BUILTIN_OPERATIONS["divide"].valid(np.array([1, 0, 5, 0]), np.array([0, 0, 2, 3]))
    assert mask.tolist() == [False, False, True, True]


def test_sqrt_domain_excludes_negatives() -> None:
    mask = BUILTIN_OPERATIONS["sqrt"].valid(np.array([-1, -1e-9, 0, 4]))
    assert mask.tolist() == [False, False, True, True]


def test_valid_refuses_non_finite_inputs_and_overflow() -> None:
    add = BUILTIN_OPERATIONS["add"]
    mask = add.valid(np.array([np.nan, np.inf, 1.0, 1e308]), np.array([1.0, 1.0, 1.0, 1e308]))
    assert mask.tolist() == [False, False, True, False]


def test_compute_broadcasts_a_scalar() -> None:
    result = BUILTIN_OPERATIONS["multiply"].compute(np.arange(4), 3)
    assert result.tolist() == [0.0, 3.0, 6.0, 9.0]


def test_wrong_arity_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"takes 2 input\(s\) \(a, b\); 1 given"):
        BUILTIN_OPERATIONS["add"].compute(np.array([1]))
    with pytest.raises(ValueError, match=r"takes 1 input\(s\) \(a\); 2 given"):
        BUILTIN_OPERATIONS["square"].compute(np.array([1]), np.array([1]))


# --------------------------------------------------------------------------------------------
# Parsing and evaluating expressions


@pytest.mark.parametrize(
    ("text", "variables", "integer_valued", "expected"),
    [
        ("a*b+a", ("a", "b"), True, 9.0),
        ("(a-b)**2", ("a", "b"), True, 1.0),
        ("-a", ("a",), True, -3.0),
        ("+a", ("a",), True, 3.0),
        ("a/b*a", ("a", "b"), False, 4.5),
        ("a*b*b", ("a", "b"), True, 12.0),
        ("2.5*a", ("a",), False, 7.5),
        ("2.0*a", ("a",), True, 6.0),
        ("a**0.5", ("a",), False, 3**0.5),
        ("a**-1", ("a",), False, 1 / 3),
        ("a**b", ("a", "b"), False, 9.0),
        ("b - 1", ("b",), True, 1.0),
        ("  a + 1_000  ", ("a",), True, 1003.0),
        ("1e3 * a", ("a",), True, 3000.0),
    ],
)
def test_valid_expressions_parse_and_evaluate(
    text: str, variables: tuple[str, ...], integer_valued: bool, expected: float
) -> None:
    parsed = parse_expression(text)
    assert parsed.text == text.strip()
    assert parsed.variables == variables
    assert parsed.arity == (2 if "b" in variables else 1)
    assert parsed.integer_valued is integer_valued
    result = parsed.evaluate(np.array([3.0]), np.array([2.0]))
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, [expected])


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("__import__('os').system('x')", "attribute access"),
        ("a.__class__", "attribute"),
        ("open('f')", "unknown function 'open'"),
        ("[a]", "list"),
        ("a if b else a", "conditional"),
        ("lambda: 1", "lambda"),
        ("a<b", "comparison"),
        ("a and b", "and/or"),
        ("'s'", "string"),
        ("_c", "'_c'"),
        ("sin", "is a function"),
        ("sin(a, b)", "takes 1 argument"),
        ("True", "boolean"),
        ("1j", "complex"),
        ("a;b", "syntax"),
        ("", "empty"),
        ("   ", "empty"),
        ("a+" * 250 + "a", "characters long"),
        ("a & b", "'&'"),
        ("a ^ 2", "'^' (write powers as **)"),
        ("~a", "'~'"),
        ("not a", "'not'"),
        ("(x := a)", "assignment"),
        ("f'{a}'", "f-string"),
        ("a[0]", "subscript"),
        ("{a: b}", "dict"),
        ("(a, b)", "tuple"),
        ("[a for a in b]", "comprehension"),
        ("2000000 * a", "too large"),
        ("1e400 * a", "too large"),
        ("None", "constant"),
        ("...", "constant"),
        ("a\x00", "control character"),
        ("a +", "syntax"),
        ("(" * 120 + "a", "syntax"),
        ("(" * 99 + "_c" + ")" * 99, "'_c'"),
        ("+".join(["a"] * 60), "operands and operators"),
        ("-" * 150 + "a", "operands and operators"),
    ],
)
def test_hostile_or_invalid_expressions_are_refused(text: str, named: str) -> None:
    with pytest.raises(ExpressionError) as excinfo:
        parse_expression(text)
    message = _one_line_error(excinfo)
    assert named in message
    assert len(message) < 400


def test_refusals_explain_the_allowed_grammar() -> None:
    with pytest.raises(ExpressionError, match=r"allowed: numbers .* up to 10 inputs named .*"):
        parse_expression("open('f')")


def test_a_500_character_expression_is_refused_before_parsing() -> None:
    text = "(" * 250 + ")" * 250
    assert len(text) == 500 > MAX_EXPRESSION_LENGTH
    with pytest.raises(ExpressionError, match="500 characters long; the limit is 400"):
        parse_expression(text)


def test_hostile_expression_has_no_side_effect(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    with pytest.raises(ExpressionError):
        parse_expression(f"__import__('os').system('touch {target}')")
    with pytest.raises(ExpressionError):
        make_operation("evil", f"open('{target}', 'w')")
    assert not target.exists()


def test_parsing_and_evaluating_never_use_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec must never be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    operation = make_operation("mix", "a*b+a")
    assert operation.compute(np.array([3]), np.array([4])).tolist() == [15.0]


def test_power_tower_is_invalid_not_a_hang() -> None:
    started = time.perf_counter()
    parsed = parse_expression("9**9**9**9")
    assert np.isnan(parsed.evaluate(np.array([1.0, 2.0]))).all()
    tower = make_operation("tower", "a + 9**9**9**9")
    assert not tower.valid(np.array([1, 2])).any()
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("text", "a", "b", "valid"),
    [
        # Division by zero inside the expression.
        ("a/(a-b)", [1, 2, 3], [1, 1, 3], [False, True, False]),
        # Undefined at a == b although numpy would return a finite 1/(1/0) = 1/inf = 0.
        ("1/(1/(a-b))", [2, 5], [2, 4], [False, True]),
        # 0 ** negative and negative ** non-integer.
        ("a**-1", [0, 2], None, [False, True]),
        ("a**0.5", [-4, 0, 4], None, [False, True, True]),
        ("(a-b)**0.5", [1, 3], [2, 2], [False, True]),
        # Negative base with an integer exponent is fine.
        ("a**3", [-2, 2], None, [True, True]),
        ("a**b", [0, -8, 2], [-1, 2, 1024], [False, True, False]),
    ],
)
def test_expression_domain(text: str, a: list[int], b: list[int] | None, valid: list[bool]) -> None:
    operation = make_operation("expr", text)
    b_array = None if b is None else np.array(b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = operation.valid(np.array(a), b_array)
        result = operation.compute(np.array(a), b_array)
    assert mask.tolist() == valid
    assert np.isnan(result[~mask]).all()
    assert np.isfinite(result[mask]).all()


def test_expression_of_a_alone_is_unary() -> None:
    operation = make_operation("cube", "a*a*a")
    assert (operation.arity, operation.integer_valued) == (1, True)
    assert operation.compute(np.array([-2, 3])).tolist() == [-8.0, 27.0]


def test_expression_integer_flag_is_conservative() -> None:
    assert parse_expression("a**2 - b*3 + 4").integer_valued
    assert parse_expression("(a+b)**3").integer_valued
    assert not parse_expression("a/b").integer_valued
    assert not parse_expression("a**(1+1)").integer_valued
    assert not parse_expression("a**-2").integer_valued
    assert not parse_expression("a*0.5").integer_valued


def test_evaluate_needs_b_when_used() -> None:
    with pytest.raises(ValueError, match="uses b"):
        parse_expression("a+b").evaluate(np.array([1.0]))


# --------------------------------------------------------------------------------------------
# Fuzzing


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=250))
def test_parse_arbitrary_text_returns_or_raises_expression_error(text: str) -> None:
    try:
        parsed = parse_expression(text)
    except ExpressionError as error:
        assert "\n" not in str(error)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parsed.evaluate_columns(
                dict.fromkeys(parsed.variables, np.arange(-2.0, 3.0))
            )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab0123456789.+-*/() e_j", max_size=60))
def test_parse_arithmetic_like_text_returns_or_raises_expression_error(text: str) -> None:
    try:
        parsed = parse_expression(text)
    except ExpressionError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = parsed.evaluate_columns(
            {name: np.arange(-2.0 - k, 3.0 - k) for k, name in enumerate(parsed.variables)}
        )
    assert result.shape in ((5,), ()) and not np.isinf(result).any()


_LEAVES = st.one_of(
    st.sampled_from(["a", "b"]),
    st.integers(min_value=0, max_value=1_000_000).map(str),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(repr),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**"]), children).map(
        lambda parts: f"({parts[0]}{parts[1]}{parts[2]})"
    )
    unary = st.tuples(st.sampled_from(["-", "+"]), children).map(lambda p: f"({p[0]}{p[1]})")
    return binary | unary


_EXPRESSIONS = st.recursive(_LEAVES, _combine, max_leaves=12)
_INPUTS = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 499.0, -500.0, 1e6, 0.5])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_EXPRESSIONS)
def test_evaluating_valid_expressions_never_raises(text: str) -> None:
    assume(len(text) <= MAX_EXPRESSION_LENGTH)
    try:
        parsed = parse_expression(text)
    except ExpressionError as error:
        assert "operands and operators" in str(error)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = parsed.evaluate(_INPUTS, _INPUTS[::-1])
    assert result.dtype == np.float64 and result.shape == _INPUTS.shape
    # Undefined points are reported as nan, never as a misleading inf.
    assert not np.isinf(result).any()
    if parsed.integer_valued:
        exact = np.isfinite(result) & (np.abs(result) < 2.0**53)
        integer_inputs = _INPUTS != 0.5
        integer_inputs &= _INPUTS[::-1] != 0.5
        checked = result[exact & integer_inputs]
        assert (checked == np.round(checked)).all()


# --------------------------------------------------------------------------------------------
# Operations, flags and resolution


def test_make_operation_builds_a_checked_operation() -> None:
    operation = make_operation("mix", " a*b+a ")
    assert operation == Operation(
        name="mix", arity=2, integer_valued=True, expression="a*b+a", description="a*b+a"
    )
    assert operation.compute(np.array([2]), np.array([5])).tolist() == [12.0]


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("add", "built-in"),
        ("sqrt", "built-in"),
        ("all", "reserved"),
        ("Mix", "lowercase"),
        ("1mix", "lowercase"),
        ("mix-2", "lowercase"),
        ("", "lowercase"),
        ("m" * 33, "32 characters"),
    ],
)
def test_make_operation_refuses_bad_names(name: str, named: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_operation(name, "a*b")
    assert named in _one_line_error(excinfo)


def test_make_operation_accepts_the_longest_name() -> None:
    assert make_operation("m" + "_1" * 15 + "x", "a").name == "m" + "_1" * 15 + "x"


def test_make_operation_needs_a_variable() -> None:
    with pytest.raises(ExpressionError, match="uses no input"):
        make_operation("constant", "2+3")


def test_make_operation_names_the_operation_in_expression_errors() -> None:
    with pytest.raises(ExpressionError, match=r"^operation 'mix': expression 'a\*\*' "):
        make_operation("mix", "a**")


def test_operation_refuses_inconsistent_fields() -> None:
    with pytest.raises(ConfigError, match="arity=1"):
        Operation(name="mix", arity=1, integer_valued=True, expression="a*b", description="")
    with pytest.raises(ConfigError, match="unknown built-in operation 'mul'"):
        Operation(name="mul", arity=2, integer_valued=True, expression=None, description="")
    with pytest.raises(ConfigError, match="inputs a, c, but its definition uses a, b"):
        Operation(name="mix", arity=2, integer_valued=True, expression="a*b", description="",
                  inputs=("a", "c"))
    # Whether an operation is integer-valued is its data's call, not its definition's.
    assert not Operation(
        name="add", arity=2, integer_valued=False, expression=None, description=""
    ).integer_valued


@pytest.mark.parametrize("operation", [*BUILTIN_OPERATIONS.values(), make_operation("m", "a/b")])
def test_to_dict_round_trips(operation: Operation) -> None:
    stored = operation.to_dict()
    assert set(stored) == {
        "name", "arity", "integer_valued", "expression", "description", "inputs"
    }
    restored = Operation.from_dict(stored)
    assert restored == operation
    assert hash(restored) == hash(operation)
    np.testing.assert_array_equal(
        restored.compute(np.array([6]), None if operation.arity == 1 else np.array([3])),
        operation.compute(np.array([6]), None if operation.arity == 1 else np.array([3])),
    )


def test_from_dict_derives_missing_fields() -> None:
    assert Operation.from_dict({"name": "divide"}) is BUILTIN_OPERATIONS["divide"]
    assert Operation.from_dict({"name": "sq", "expression": "a*a"}).arity == 1


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"name": "mix", "expression": "a*b", "arity": 1}, "arity=1"),
        ({"name": "mix", "expression": "a*b", "integer_valued": 1}, "integer_valued=1"),
        ({"name": "add", "expression": "a*b"}, "built-in"),
        ({"name": "mul"}, "unknown operation 'mul'"),
        ({"name": "mix", "expression": "open('f')"}, "unknown function 'open'"),
        ({"name": "mix", "expression": 3}, "must be text"),
        ({"name": 3}, "must be text"),
        ({"name": "add", "colour": "red"}, "unknown operation field 'colour'"),
    ],
)
def test_from_dict_refuses_tampered_configs(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Operation.from_dict(data)
    assert named in _one_line_error(excinfo)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mix=a*b+a", ("mix", "a*b+a")),
        (" mix = (a - b) ** 2 ", ("mix", "(a - b) ** 2")),
    ],
)
def test_parse_expr_flag(text: str, expected: tuple[str, str]) -> None:
    assert parse_expr_flag(text) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("a*b+a", "has no '='"),
        ("=a*b", "no name"),
        ("mix=", "no expression"),
        ("Mix=a", "lowercase"),
    ],
)
def test_parse_expr_flag_refuses_malformed_flags(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_expr_flag(text)
    message = _one_line_error(excinfo)
    assert named in message


def test_resolve_all_gives_builtins_then_expressions() -> None:
    assert [op.name for op in resolve_operations(["all"], {})] == BUILTIN_NAMES
    resolved = resolve_operations(["all"], {"mix": "a*b+a", "pole": "a/(a-b)"})
    assert [op.name for op in resolved] == [*BUILTIN_NAMES, "mix", "pole"]


def test_resolve_keeps_order_and_drops_duplicates() -> None:
    resolved = resolve_operations(["multiply", "mix", "add", "multiply", "all"], {"mix": "a*b"})
    assert [op.name for op in resolved] == [
        "multiply",
        "mix",
        "add",
        "subtract",
        "divide",
        "square",
        "sqrt",
    ]


def test_resolve_includes_defined_but_unnamed_expressions() -> None:
    resolved = resolve_operations(["add"], {"mix": "a*b+a"})
    assert [op.name for op in resolved] == ["add", "mix"]
    assert resolved[1].expression == "a*b+a"


def test_resolve_refuses_unknown_names_with_the_choices() -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_operations(["mul"], {})
    assert _one_line_error(excinfo) == (
        "unknown operation 'mul'; choose from add, subtract, multiply, divide, square, sqrt "
        "or define it with --expr NAME=EXPRESSION or --data NAME=FILE"
    )
    with pytest.raises(ConfigError, match="sqrt, mix or define"):
        resolve_operations(["mul"], {"mix": "a*b"})


def test_resolve_refuses_bad_expressions_and_empty_selection() -> None:
    with pytest.raises(ExpressionError, match="operation 'bad'"):
        resolve_operations(["add"], {"bad": "a.__class__"})
    with pytest.raises(ConfigError, match="built-in"):
        resolve_operations([], {"add": "a+b"})
    with pytest.raises(ConfigError, match="no operation chosen"):
        resolve_operations([], {})
