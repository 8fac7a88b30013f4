from __future__ import annotations

import optuna
import pytest

from sweep.errors import ConfigError
from sweep.nets import ModelSpec, count_parameters
from sweep.search.space import SearchSpace, spec_from_params


def test_parameter_count_of_the_original_network() -> None:
    # 2-3-5-3-5-1 from the original question.
    assert count_parameters(2, [3, 5, 3, 5]) == 9 + 20 + 18 + 20 + 6


def test_linear_model_is_allowed_and_named() -> None:
    spec = ModelSpec((), "linear", "none", "none", 0.01, 32, "mse", 5, "constant", True)
    assert spec.architecture(2) == "2-1 linear"
    assert spec.parameter_count(2) == 3


def test_defaults_validate() -> None:
    SearchSpace().validate()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"layers": {"low": 3, "high": 1}}, "low <= high must hold"),
        ({"width": {"low": -4, "high": 8}}, "out of bounds"),
        ({"activation": []}, "empty list"),
        ({"activation": ["relu", "sigmoidish"]}, "'sigmoidish' is not allowed"),
        ({"loss": "hinge"}, "'hinge' is not allowed"),
        ({"batch_size": [0]}, "must be positive"),
        ({"learning_rate": {"low": 0, "high": 0.1, "log": True}}, "out of bounds"),
        ({"epochs": {"low": 1, "high": 10, "step": 2}}, "unknown key 'step'"),
        ({"colour": ["red"]}, "unknown space key 'colour'"),
        ({"layers": 16, "width": 4096}, "parameters; the bound is space.max_parameters"),
        ({"width": {"low": 2}}, "needs both low and high"),
    ],
)
def test_impossible_spaces_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(raw)


def test_a_fixed_dimension_is_not_suggested_and_narrowing_works() -> None:
    space = SearchSpace.from_dict(
        {"family": ["mlp"], "layers": 0, "input_normalization": ["log"], "learning_rate": 0.01}
    )
    study = optuna.create_study()
    trial = study.ask()
    spec = space.suggest(trial)
    assert spec.hidden_layers == ()
    assert spec.input_normalization == "log"
    assert spec.learning_rate == 0.01
    assert "layers" not in trial.params
    assert "learning_rate" not in trial.params


def test_suggest_then_rebuild_from_stored_params() -> None:
    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        spec = space.suggest(trial)
        assert len(spec.hidden_layers) <= 3
        assert all(2 <= w <= 64 for w in spec.hidden_layers)
        assert spec_from_params(trial.params, space) == spec
        study.tell(trial, 1.0)


def test_to_dict_round_trips() -> None:
    space = SearchSpace.from_dict({"width": {"low": 4, "high": 32, "log": True}, "loss": ["mae"]})
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_startup_designs_follow_the_space() -> None:
    from sweep.search.designs import startup_designs

    designs = startup_designs(SearchSpace())
    linear = [d for d in designs if d["family"] == "mlp"]
    pairs = [(d["input_normalization"], d["target_normalization"]) for d in linear]
    assert pairs == [("none", "none"), ("log_abs", "log_abs"), ("standard", "standard"),
                     ("log", "log")]
    assert all(d["layers"] == 0 and d["refit_output"] is True for d in linear)
    # The power designs, then the formula design, come last: the linear ones keep their places.
    assert designs[len(linear):] == [
        {"family": "power", "snap_output": True, "target_normalization": "none", "degree": 4,
         "negative_powers": True, "half_powers": False},
        {"family": "power", "snap_output": True, "target_normalization": "none", "degree": 2,
         "negative_powers": True, "half_powers": True},
        {"family": "formula", "degree": 3, "max_terms": 6, "functions": True},
    ]
    assert [d["degree"] for d in startup_designs(
        SearchSpace.from_dict({"family": ["power"], "degree": {"low": 1, "high": 3}}))] == [2]
    assert startup_designs(SearchSpace.from_dict(
        {"family": ["formula"], "degree": {"low": 1, "high": 2}, "functions": [False]}
    )) == [{"degree": 2, "max_terms": 6}]

    narrowed = SearchSpace.from_dict({"input_normalization": ["log", "log_abs"],
                                      "target_normalization": ["log_abs"]})
    assert [d["input_normalization"] for d in startup_designs(narrowed)
            if d["family"] == "mlp"] == ["log_abs"]
    mlp_only = {"family": ["mlp"]}
    assert startup_designs(SearchSpace.from_dict({**mlp_only, "layers": {"low": 1, "high": 2}})
                           ) == []
    assert startup_designs(SearchSpace.from_dict({**mlp_only, "loss": ["mae", "huber"]})) == []


def test_power_family_is_searched_and_its_trials_rebuild() -> None:
    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    families = set()
    for _ in range(30):
        trial = study.ask()
        spec = space.suggest(trial)
        families.add(spec.family)
        if spec.family == "power":
            # The MLP's training dimensions are not sampled for a power trial.
            assert "learning_rate" not in trial.params and "layers" not in trial.params
            assert 1 <= spec.degree <= 4 and spec.hidden_layers == ()
            assert spec.architecture(2).startswith("2-P")
        assert spec_from_params(trial.params, space) == spec
        study.tell(trial, 1.0)
    assert families == {"mlp", "power", "formula"}
    # A trial stored before the family existed rebuilds as the MLP it was.
    old = {"layers": 0, "input_normalization": "none", "target_normalization": "none",
           "learning_rate": 0.01, "batch_size": 32, "loss": "mse", "lr_schedule": "cosine",
           "refit_output": True}
    assert spec_from_params(old, space).family == "mlp"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"family": ["cnn"]}, r"space.family value 'cnn' is not allowed; choose from mlp, power"),
        ({"degree": 9}, r"space.degree.low = 9 is out of bounds; allowed 1..8"),
        ({"negative_powers": "yes"}, r"space.negative_powers value 'yes' is not true or false"),
        ({"family": ["power"], "degree": 8, "half_powers": [True], "max_parameters": 100},
         r"largest power model in the space \(degree 8\) has 545 parameters"),
    ],
)
def test_power_knobs_are_checked(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(raw)
