"""Limits: impossible or dangerous settings are refused before anything is written, in one line
that names the value: a space whose largest model is too big, budgets of 0 or below, too few
examples, and ranges that leave an operation no valid input."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy

from sweep.cli import main

# (extra command-line arguments, campaign file, text the one error line must contain)
CASES: list[tuple[list[str], str, list[str]]] = [
    # Model size: the largest network the space allows, against space.max_parameters.
    ([], "[space]\nlayers = { low = 0, high = 16 }\nwidth = { low = 2, high = 4096 }\n",
     ["16 layers of width 4096", "251736065 parameters", "space.max_parameters = 250000"]),
    ([], "[space]\nmax_parameters = 100\n",
     ["3 layers of width 64", "8577 parameters", "space.max_parameters = 100"]),
    ([], "[overrides.add]\nlayers = 16\nwidth = 1000\n", ["16 layers of width 1000"]),
    ([], "[space]\nwidth = 5000\n", ["space.width.low = 5000", "out of bounds"]),
    ([], "[space]\nlayers = 17\n", ["space.layers.low = 17", "out of bounds"]),
    ([], "[space]\nmax_parameters = 0\n", ["max_parameters", "got 0"]),
    # Budgets.
    (["--trials", "0"], "", ["--trials", "'0' is out of range; allowed 1 to"]),
    (["--trials", "-1"], "", ["--trials", "'-1' is out of range; allowed 1 to"]),
    (["--trials", "many"], "", ["--trials", "'many' is not an integer"]),
    ([], "[campaign]\ntrials = 0\n", ["trials must be a positive integer, got 0"]),
    ([], "[campaign]\ntrials = -5\n", ["trials must be a positive integer, got -5"]),
    ([], "[campaign]\ntrials = 2.5\n", ["trials must be a positive integer, got 2.5"]),
    ([], "[campaign]\ntrials = true\n", ["trials must be a positive integer, got True"]),
    (["--timeout", "0"], "", ["--timeout", "'0' must be a positive number of seconds"]),
    (["--timeout", "-3"], "", ["--timeout", "'-3' must be a positive number of seconds"]),
    (["--timeout", "nan"], "", ["--timeout", "'nan' must be a positive number of seconds"]),
    (["--timeout", "inf"], "", ["--timeout", "'inf' must be a positive number of seconds"]),
    ([], "[campaign]\ntimeout = 0\n", ["timeout must be a positive number of seconds, got 0"]),
    ([], "[campaign]\ntimeout = nan\n", ["timeout must be a positive number of seconds, got nan"]),
    (["--workers", "0"], "", ["--workers", "'0' is out of range; allowed 1 to 64"]),
    ([], "[campaign]\nmax_trial_seconds = 0\n", ["max_trial_seconds", "got 0"]),
    # Data.
    ([], "[data]\nexamples = 9\n", ["examples must be at least 10, got 9"]),
    ([], "[data]\nexamples = -1\n", ["examples must be at least 10, got -1"]),
    ([], "[data]\ntest_examples = 0\n", ["test_examples must be at least 1", "got 0"]),
    ([], "[data]\nexamples = 1000000000\n", ["examples=1000000000 is too large"]),
    ([], "[data]\nlow = 5\nhigh = 5\n", ["low must be less than high, got low=5, high=5"]),
    # Ranges that leave an operation no valid input.
    (["--ops", "divide"], "[data]\nlow = 0\nhigh = 1\n",
     ["'divide'", "no valid input", "[0, 1)"]),
    (["--ops", "sqrt"], "[data]\nlow = -10\nhigh = 0\n",
     ["'sqrt'", "no valid input", "[-10, 0)"]),
    (["--ops", "sqrt"], "[data]\nlow = -10\nhigh = 1\n", ["'sqrt'", "only 1 valid input"]),
    (["--expr", "never=a/(a-a)"], "", ["'never'", "no valid input"]),
]


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's refusals
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _argv(tmp_path: Path, extra: list[str], toml: str, storage: str) -> list[str]:
    argv = ["run", *extra, "--storage", storage]
    if "--ops" not in extra and "--expr" not in extra:
        argv += ["--ops", "add"]
    if toml:
        config = tmp_path / "campaign.toml"
        config.write_text(toml)
        argv += ["--config", str(config)]
    return argv


@pytest.mark.parametrize(("extra", "toml", "named"), CASES)
def test_limits_are_refused_up_front_naming_the_value(
    extra: list[str], toml: str, named: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SWEEP_ARTIFACTS", str(work / "artifacts"))
    code, out, err = _run_main(
        _argv(tmp_path, extra, toml, f"sqlite:///{work / 'sweeps.db'}"), capsys
    )
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in named:
        assert text in lines[0], (text, lines[0])
    assert list(work.iterdir()) == []  # no database, no lock file, no artifact folder


@pytest.mark.server
@pytest.mark.parametrize(
    ("extra", "toml", "named"),
    [CASES[0], CASES[9], CASES[26]],
    ids=["model-too-big", "zero-trials", "divide-no-input"],
)
def test_limits_leave_a_server_database_untouched(
    extra: list[str], toml: str, named: list[str], server_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _run_main(_argv(tmp_path, extra, toml, server_url), capsys)
    assert code == 2 and named[0] in err, err
    engine = sqlalchemy.create_engine(server_url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            assert sqlalchemy.inspect(connection).get_table_names() == []
    finally:
        engine.dispose()
