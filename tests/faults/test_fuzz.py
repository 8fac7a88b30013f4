"""Fuzzing the two ways user text gets in: expressions (with operation names) and campaign
configuration (TOML files, and the stored campaign a worker loads). No input may raise anything
but `ConfigError` (ExpressionError is one), and every refusal is a single line.

The expression grammar itself is fuzzed in tests/sweep/problem/test_operations.py; here the whole
`--expr NAME=EXPRESSION` path and the config loader are.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep.errors import ConfigError
from sweep.problem.operations import make_operation, parse_expr_flag, resolve_operations
from sweep.search.config import (
    CampaignConfig,
    config_from_toml,
    load_toml,
    validate_campaign_name,
    with_seed,
)

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow]
)

# --- expressions and names --------------------------------------------------------------------

_EXPRESSION_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="ab0123456789.+-*/()= _\n\x00\\", max_size=40),
)


@FUZZ
@given(_EXPRESSION_TEXT)
def test_an_expr_flag_is_an_operation_or_one_config_error(text: str) -> None:
    try:
        name, expression = parse_expr_flag(text)
        operation = make_operation(name, expression)
        resolve_operations([name], {name: expression})
    except ConfigError as error:
        assert "\n" not in str(error), str(error)
        return
    assert operation.name == name
    assert name.isascii() and name.isidentifier() and "/" not in name  # safe in any path


@FUZZ
@given(st.text(max_size=60))
def test_a_campaign_name_is_safe_or_refused(name: str) -> None:
    try:
        checked = validate_campaign_name(name)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert checked == name
    assert name.isascii() and name.isprintable() and "/" not in name and ".." not in name
    assert all(c.isalnum() or c in "_-" for c in name)


# --- configuration ------------------------------------------------------------------------------

_WORDS = [
    # Keys and values the loader knows, so the fuzz gets past the unknown-key checks.
    "campaign", "expressions", "data", "space", "overrides", "name", "operations", "seed",
    "trials", "timeout", "sampler", "pruner", "objective", "second_objective",
    "max_trial_seconds", "startup_designs", "low", "high", "examples", "test_examples",
    "extrapolation_examples", "validation_fraction", "layers", "width", "activation",
    "input_normalization", "target_normalization", "learning_rate", "batch_size", "loss",
    "epochs", "lr_schedule", "refit_output", "precision", "max_parameters", "log",
    "add", "multiply", "divide", "sqrt", "all", "cube", "tpe", "random", "median", "none",
    "mae", "parameters", "relu", "log_abs", "standard", "float64", "a*a*a", "a/b", "arith",
]
_SCALARS = st.one_of(
    st.integers(min_value=-3, max_value=600),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.sampled_from(_WORDS),
    st.text(max_size=10),
    st.datetimes(),  # TOML has dates and times too
    st.dates(),
    st.times(),
)
_KEYS = st.one_of(st.sampled_from(_WORDS), st.text(max_size=8))
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=10,
)


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(keys), _KEYS), _VALUES, max_size=5)


_SPACE_KEYS = [
    "layers", "width", "activation", "input_normalization", "target_normalization",
    "learning_rate", "batch_size", "loss", "epochs", "lr_schedule", "refit_output",
    "precision", "max_parameters", "family", "degree", "negative_powers", "half_powers",
    "snap_output",
]
_DOCUMENTS = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "campaign": _table(sorted({"name", "operations", "seed", "trials", "timeout",
                                       "sampler", "pruner", "objective", "second_objective",
                                       "max_trial_seconds", "startup_designs"})),
            "expressions": st.dictionaries(st.sampled_from(["cube", "mix", "x"]),
                                           st.one_of(st.sampled_from(_WORDS), _VALUES)),
            "data": _table(["low", "high", "examples", "test_examples",
                            "extrapolation_examples", "validation_fraction"]),
            "space": _table(_SPACE_KEYS),
            "overrides": st.dictionaries(st.sampled_from(["add", "cube", "sqrt", "x"]),
                                         _table(_SPACE_KEYS) | _VALUES, max_size=2),
        },
    ),
    st.dictionaries(_KEYS, _VALUES, max_size=5),
)


def _check(raw: dict[str, Any]) -> CampaignConfig | None:
    try:
        config = config_from_toml(raw)
        config.validate()
    except ConfigError as error:
        assert "\n" not in str(error), str(error)
        return None
    return config


@FUZZ
@given(_DOCUMENTS)
def test_the_config_loader_raises_only_config_errors(raw: dict[str, Any]) -> None:
    config = _check(raw)
    if config is None:
        return
    # A config that validates is stored as JSON with its campaign; a worker loads it back.
    stored = json.loads(json.dumps(config.to_dict()))
    assert CampaignConfig.from_dict(stored).to_dict() == config.to_dict()


def _jsonable(value: Any) -> Any:
    """What a stored (JSON) campaign can hold: no dates, no NaN."""
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@FUZZ
@given(st.data())
def test_a_tampered_stored_campaign_raises_only_config_errors(data: st.DataObject) -> None:
    """The campaign row in the database is read by every worker and by pull/predict; a row
    edited by hand (or by an older version) must not crash them with a traceback."""
    stored = with_seed(CampaignConfig(operations=("add", "cube"), expressions={"cube": "a*a*a"}),
                       0).to_dict()
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from([*stored, "extra"]))
        if data.draw(st.booleans()) and key in stored:
            del stored[key]
        else:
            stored[key] = data.draw(_VALUES.map(_jsonable))
    try:
        CampaignConfig.from_dict(stored)
    except ConfigError as error:
        assert "\n" not in str(error), str(error)


_TOML_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.one_of(
            st.sampled_from(["[campaign]", "[data]", "[space]", "[expressions]",
                             "[overrides.add]", "[[campaign]]", "[space.layers]"]),
            st.builds(
                lambda k, v: f"{k} = {v}",
                st.sampled_from(_WORDS),
                st.one_of(
                    st.integers().map(str), st.floats().map(repr),
                    st.sampled_from(["true", "nan", "inf", "-inf", "[]", "{}", '"add"',
                                     '["add", "cube"]', "{ low = 0, high = 2 }",
                                     "{ low = 1e-9, high = 1, log = true }", "1979-05-27"]),
                    st.text(max_size=10).map(json.dumps),
                ),
            ),
        ),
        max_size=12,
    ).map("\n".join),
)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.one_of(_TOML_TEXT, st.binary(max_size=200)))
def test_any_file_is_a_config_or_one_config_error(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "campaign.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            raw = load_toml(path)
        except ConfigError as error:
            assert "\n" not in str(error), str(error)
            return
    _check(raw)
