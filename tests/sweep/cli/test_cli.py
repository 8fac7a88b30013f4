"""The `sweep` command: bad input in-process (fast), a real sweep through the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sweep.cli import main

SMALL = """
[data]
examples = 600
test_examples = 200
extrapolation_examples = 200
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--ops", "mul"], "unknown operation 'mul'"),
        (["run", "--expr", "bad=__import__('os').system('x')"], "not allowed"),
        (["run", "--expr", "noequals"], "NAME=EXPRESSION"),
        (["run", "--expr", "cube=a*a*_c"], "'_c'"),
        (["run", "--trials", "0"], "--trials"),
        (["run", "--timeout", "-5"], "--timeout"),
        (["run", "--campaign", "../x"], "invalid campaign name"),
        (["run", "--sampler", "bayes"], "sampler 'bayes' is not allowed"),
        (["run", "--config", "missing.toml"], "does not exist"),
        (["best", "--storage", "sweeps.db"], "sqlite:///"),
        (["best", "--storage", "redis://localhost/0"], "redis"),
        (["pull", "add", "-o", "model.h5"], "must end in .keras"),
        (["predict", "add", "1", "x"], "'x' is not a number"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "sweeps.db"
    monkeypatch.setenv("SWEEP_STORAGE", f"sqlite:///{db}")
    code, _, err = _run_main(args, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not db.exists()


def test_impossible_range_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[data]\nlow = 0\nhigh = 1\n")
    db = tmp_path / "x.db"
    code, _, err = _run_main(
        ["run", "--ops", "divide", "--config", str(config), "--storage", f"sqlite:///{db}"], capsys
    )
    assert code == 2 and "divide" in err and len(err.strip().splitlines()) == 1
    assert not db.exists()


def test_unreachable_server_masks_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://user:s3cr3t@127.0.0.1:1/db"
    code, _, err = _run_main(["run", "--ops", "add", "--trials", "1", "--storage", url], capsys)
    assert code == 2
    assert "s3cr3t" not in err and "***" in err
    assert len(err.strip().splitlines()) == 1


def test_campaign_identity_is_protected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(SMALL)
    url = f"sqlite:///{tmp_path / 's.db'}"
    base = ["run", "--ops", "add", "--trials", "1", "--config", str(config), "--storage", url]
    assert _run_main(base, capsys)[0] == 0
    code, _, err = _run_main([*base, "--seed", "9"], capsys)
    assert code == 2 and "already exists with a different seed, data" in err
    summaries = optuna.get_all_study_summaries(url)
    assert [s.n_trials for s in summaries] == [1]


def _sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWEEP_STORAGE": f"sqlite:///{cwd / 'sweeps.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600,
    )


@pytest.mark.slow
def test_real_sweep_through_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text(SMALL)
    args = ["run", "--ops", "add,square,cube", "--expr", "cube=a*a*a", "--trials", "3",
            "--config", "small.toml"]
    result = _sweep(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Best model per operation" in result.stdout
    for op in ("add", "square", "cube"):
        assert op in result.stdout
    assert "Traceback" not in result.stderr

    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(url)}
    assert set(studies) == {"arith.add", "arith.square", "arith.cube"}
    stopped = {}
    for line in result.stderr.splitlines():  # "<time> add: 2 trials counted, ...; stopped: ..."
        if "stopped: exact at trial" in line:
            stopped[line.split()[1].rstrip(":")] = int(line.split()[-1])
    # Each stopped at its first exact model (the startup designs find all three), not at 3.
    assert set(stopped) == {"add", "square", "cube"}, result.stdout
    for summary in studies.values():
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(counted) == stopped[summary.study_name.split(".")[1]] + 1 <= 3
        assert study.user_attrs["campaign"] == "arith"
        assert study.user_attrs["data"]["examples"] == 600
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        assert all("test_hit_rate" in t.user_attrs for t in complete)

    # Re-running resumes: the budget is a total and the models are exact: nothing more runs.
    again = _sweep(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for name in studies:
        assert len(optuna.load_study(study_name=name, storage=url).trials) == studies[
            name
        ].n_trials

    best = _sweep("best", "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    rows = json.loads(best.stdout)
    assert {row["operation"] for row in rows} == {"add", "square", "cube"}
    for row in rows:
        for key in ("operation", "study", "trial", "params", "mae", "median_relative_error",
                    "hit_rate", "extrapolation_hit_rate"):
            assert key in row
        # The startup designs make these exact within three trials: add without
        # normalisation, square and a*a*a as linear maps in the log_abs domain.
        assert row["hit_rate"] == 1.0, row
        assert row["extrapolation_hit_rate"] == 1.0, row


_PARSE_EVERY_COMMAND = """
import json, sys
from sweep.cli.main import build_parser
for argv in (["run"], ["worker"], ["best"], ["pull", "add"], ["predict", "add", "1", "2"],
             ["models"], ["serve"], ["dashboard"], ["report"]):
    build_parser().parse_args(argv)
heavy = ("optuna", "rich", "tensorflow", "keras", "numpy", "sqlalchemy", "boto3", "mlflow")
print(json.dumps([name for name in heavy if name in sys.modules]))
"""


def test_parsing_any_command_loads_no_heavy_library() -> None:
    """Each command module imports what it runs with inside its action, never at the top."""
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_EVERY_COMMAND], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def _class_interrupted_while_created() -> None:
    class Interrupts:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    class Holder:  # Python 3.11 wraps the interrupt: "RuntimeError: Error calling __set_name__"
        field = Interrupts()


def test_ctrl_c_that_python_wrapped_in_another_error_still_ends_as_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_main = sys.modules["sweep.cli.main"]  # (`sweep.cli.main` the attribute is the function)

    with pytest.raises(BaseException) as raised:
        _class_interrupted_while_created()
    assert not isinstance(raised.value, KeyboardInterrupt)  # what CI saw, as a traceback
    monkeypatch.setattr(cli_main, "_main", lambda argv: _class_interrupted_while_created())
    monkeypatch.delenv("SWEEP_PARENT_PID", raising=False)
    try:
        assert main([]) == 130
    finally:
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert "sweep: interrupted" in capsys.readouterr().err
    monkeypatch.setattr(cli_main, "_main", lambda argv: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a real bug still shows itself
        main([])


FINALISER_HIT_BY_A_SIGNAL = """
import signal, sys, time, weakref
import sweep.cli
from sweep.search._signals import install_signal_handlers

def command() -> int:
    if sys.argv[1] == "SIGTERM":
        install_signal_handlers()  # as `sweep run` and `sweep worker` do
    class Thing: ...
    def finaliser(_ref):
        signal.raise_signal(getattr(signal, sys.argv[1]))  # arrives while a weakref callback runs
    thing = Thing()
    ref = weakref.ref(thing, finaliser)
    try:
        del thing
        time.sleep(30)  # a blocking call: the interrupt must end it, not wait for it
    except KeyboardInterrupt as stop:
        print("stopped", *stop.args, flush=True)
        return 130
    print("ran to the end", flush=True)
    return 0

sweep.cli.main = command
sweep.cli.run()
"""


@pytest.mark.parametrize(("signal_name", "printed"), [
    ("SIGINT", "stopped\n"),  # Python's own handler (`pull`, `best`, ...)
    ("SIGTERM", "stopped SIGTERM\n"),  # the sweep's, which records the signal
])
def test_a_signal_that_lands_in_a_finaliser_still_stops_the_command_without_a_traceback(
    signal_name: str, printed: str, tmp_path: Path,
) -> None:
    """CI saw `sweep pull` interrupted inside SQLAlchemy's weakref callback print "Exception
    ignored in ..." with a traceback, then carry on as if Ctrl-C never came. The program
    sends such a signal again, and it lands where it can propagate."""
    result = subprocess.run(
        [sys.executable, "-c", FINALISER_HIT_BY_A_SIGNAL, signal_name], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert (result.returncode, result.stdout) == (130, printed), result
    assert result.stderr == ""


@pytest.mark.parametrize(
    "command",
    [
        # A worker for a campaign that does not exist.
        ["worker", "--campaign", "nowhere"],
        # A run whose campaign exists with other data (created below).
        ["run", "--ops", "add", "--trials", "1", "--config", "other.toml"],
    ],
    ids=["worker-unknown-campaign", "run-conflicting-campaign"],
)
def test_a_refused_run_or_worker_does_not_wait_for_tensorflow(
    command: list[str], tmp_path: Path
) -> None:
    """The refusal is printed while TensorFlow still imports in its thread: here a stand-in
    `tensorflow` whose import takes 10 minutes; the real one took ~6 s before each line."""
    slow = tmp_path / "slow_tensorflow" / "tensorflow"
    slow.mkdir(parents=True)
    (slow / "__init__.py").write_text("import time\ntime.sleep(600)\n")
    (tmp_path / "other.toml").write_text("[data]\nexamples = 700\n")
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    from storage import Database
    from sweep.search.config import CampaignConfig

    with Database(url) as database:
        database.campaigns.register("arith", lambda stored: CampaignConfig().to_dict())
    env = {
        **os.environ,
        "SWEEP_STORAGE": url,
        "PYTHONPATH": os.pathsep.join([str(slow.parent), str(Path.cwd())]),
    }
    env.pop("SWEEP_CAMPAIGN", None)
    done = subprocess.run(
        [sys.executable, "-m", "sweep", *command], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), done.stderr
    assert "does not exist" in lines[0] or "already exists with a different data" in lines[0]
