from __future__ import annotations

from pathlib import Path

import pytest

from sweep.errors import ConfigError
from sweep.search.config import CampaignConfig, config_from_toml, load_toml, with_seed


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_defaults_validate_and_cover_the_six_operations() -> None:
    config = CampaignConfig()
    config.validate()
    assert [op.name for op in config.resolved_operations()] == [
        "add", "subtract", "multiply", "divide", "square", "sqrt",
    ]


def test_toml_overlays_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[campaign]
name = "exp1"
operations = ["add", "cube"]
trials = 7
seed = 3
[expressions]
cube = "a*a*a"
[data]
high = 100
[space]
layers = { low = 0, high = 1 }
[overrides.add]
layers = 0
""")
    config = config_from_toml(load_toml(path))
    config.validate()
    assert config.name == "exp1" and config.trials == 7
    assert config.data.high == 100 and config.data.seed == 3
    assert config.space_for("add").layers.is_fixed
    assert not config.space_for("cube").layers.is_fixed
    assert [op.name for op in config.resolved_operations()] == ["add", "cube"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[campaign]\ncolour = 1\n", "unknown config key 'campaign.colour'"),
        ("[extra]\n", "unknown config key 'extra'"),
        ("[data]\nlow = 5\nhigh = 5\n", "low"),
        ("[data]\nexamples = 3\n", "examples"),
        ("[data]\nseed = 3\n", "unknown config key 'data.seed'"),
        ("[space]\nactivation = []\n", "empty list"),
        ("[space]\nwidth = { low = -1, high = 4 }\n", "out of bounds"),
        ("[campaign]\nsampler = 'bayes'\n", "sampler 'bayes' is not allowed"),
        ("[campaign]\ntrials = 0\n", "trials must be a positive integer"),
        ("[campaign]\noperations = []\n", "non-empty list"),
        ("[campaign]\noperations = ['mul']\n", "unknown operation 'mul'"),
        ("[overrides.divide]\nlayers = 0\n[campaign]\noperations = ['add']\n", "overrides.divide"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_value_named(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_toml(load_toml(_write(tmp_path, text))).validate()


def test_missing_and_directory_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_toml(tmp_path)


def test_stored_form_round_trips() -> None:
    config = with_seed(CampaignConfig(expressions={"cube": "a*a*a"}), 5)
    again = CampaignConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.identity_conflicts(config) == []


def test_identity_conflicts_name_the_setting() -> None:
    stored = CampaignConfig()
    changed = with_seed(CampaignConfig(trials=99), 1)
    assert changed.identity_conflicts(stored) == ["seed", "data"]
    assert CampaignConfig(trials=99, timeout=5).identity_conflicts(stored) == []


@pytest.mark.parametrize("name", ["", "a/b", "../x", "a b", "x" * 49, "naïve", "a\nb"])
def test_bad_campaign_names(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid campaign name"):
        CampaignConfig(name=name).validate()


def test_a_budget_is_required() -> None:
    with pytest.raises(ConfigError, match="needs a budget"):
        CampaignConfig(trials=None, timeout=None).validate()


def test_stop_when_exact_is_a_run_setting_that_round_trips() -> None:
    config = CampaignConfig(stop_when_exact=False)
    stored = config.to_dict()
    assert stored["stop_when_exact"] is False
    assert CampaignConfig.from_dict(stored).stop_when_exact is False
    # A campaign stored before the setting existed stops when exact, as a new one does.
    old = {k: v for k, v in CampaignConfig().to_dict().items() if k != "stop_when_exact"}
    assert CampaignConfig.from_dict(old).stop_when_exact is True
    # Not identity: a re-run may change it, as it may change the budget.
    assert config.identity_conflicts(CampaignConfig()) == []


def test_stop_when_exact_in_the_campaign_file(tmp_path: Path) -> None:
    assert CampaignConfig().stop_when_exact is True
    path = _write(tmp_path, "[campaign]\nstop_when_exact = false\n")
    assert config_from_toml(load_toml(path)).stop_when_exact is False
    path = _write(tmp_path, "[campaign]\nstop_when_exact = 'no'\n")
    with pytest.raises(ConfigError, match="stop_when_exact must be true or false, got 'no'"):
        config_from_toml(load_toml(path)).validate()


@pytest.mark.parametrize(
    ("campaign", "budget"),
    [
        ("timeout = 60\n", (None, 60)),
        ("timeout = 60\ntrials = 7\n", (7, 60)),
        ("trials = 7\n", (7, None)),
        ("seed = 1\n", (20, None)),
    ],
    ids=["timeout-alone", "both", "trials-alone", "neither"],
)
def test_a_timeout_alone_in_the_file_has_no_trial_cap(
    tmp_path: Path, campaign: str, budget: tuple[int | None, float | None]
) -> None:
    config = config_from_toml(load_toml(_write(tmp_path, "[campaign]\n" + campaign)))
    config.validate()
    assert (config.trials, config.timeout) == budget


def test_a_campaign_from_before_the_formula_family_keeps_its_stored_space() -> None:
    from dataclasses import replace

    from sweep.search.config import keeping_stored_space
    from sweep.search.space import SearchSpace

    stored_space = SearchSpace.from_dict({"family": ["mlp", "power"]})
    stored = CampaignConfig(space=stored_space)
    raw = stored.to_dict()
    for key in ("max_terms", "functions"):  # what an older version stored
        del raw["space"][key]
    stored = CampaignConfig.from_dict(raw)
    today = CampaignConfig()
    assert "formula" in today.space.family.values()
    assert today.identity_conflicts(stored) == ["space"]
    resumed = keeping_stored_space(today, stored)
    assert resumed.identity_conflicts(stored) == []
    assert "formula" not in resumed.space.family.values()
    # A space that differs in anything else is still a different campaign.
    wider = replace(today, space=SearchSpace.from_dict({"epochs": 55}))
    assert keeping_stored_space(wider, stored).identity_conflicts(stored) == ["space"]
