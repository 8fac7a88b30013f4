"""The command line as a whole, fuzzed: random argument vectors, config files and environment
values against a small real database.

Every command must end with exit code 0, a one-line error and exit code 2, or 130 when it was
interrupted; never a traceback. A refused command changes nothing stored: the trial counts
and the registry's checksums are read before and after each one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import pytest
import sqlalchemy
from _fault_helpers import kept_affinity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import Database, ModelCandidate
from sweep.cli import main
from sweep.search.config import CampaignConfig

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_HOSTILE = [
    "", " ", "-", "--", "\x1b[31m", "[bold]x[/bold]", "a" * 3000, "../../etc/passwd", "/dev/zero",
    "nan", "inf", "-1", "0", "1e309", "99999999999999999999", "\x00", "é", "add,multiply",
    "sqlite:///:memory:", "postgresql://u:p@ss@127.0.0.1:1/db", "mysql://x", "x=a*b",
    "cube=a*a*a # \x1b]8;;http://x\x07", "ARITH", "arith", "all",
]
_VALUES = st.one_of(st.sampled_from(_HOSTILE), st.text(max_size=20))
_FLAGS = [
    "--ops", "--trials", "--timeout", "--storage", "--config", "--seed", "--expr", "--campaign",
    "--sampler", "--pruner", "--workers", "--json", "--version", "--force", "-o", "--host",
    "--port", "--artifacts", "--quiet", "--allow-remote", "--read-only", "--writable", "--help",
]
_COMMANDS = ["run", "worker", "best", "models", "pull", "predict", "report", "dashboard",
             "bogus"]
_ENVIRONMENT = st.dictionaries(
    st.sampled_from(["SWEEP_CAMPAIGN", "SWEEP_ARTIFACTS", "SWEEP_DATABASE_PATIENCE",
                     "SWEEP_HEARTBEAT_INTERVAL", "SWEEP_GRACE_PERIOD", "SWEEP_PIN_WORKERS",
                     "SWEEP_WORKERS", "SWEEP_WORKER_CORE", "SWEEP_PARENT_PID",
                     "SWEEP_TF_VERBOSE"]),
    st.sampled_from(["", "0", "1", "abc", "-5", "1e400", "\x1b[2J", "arith", "3", "99999"]),
    max_size=3,
)
_CONFIGS = st.one_of(
    st.just(""),
    st.sampled_from([
        "[campaign]\ntrials = 1\noperations = ['add']\n",
        "[campaign]\ntimeout = inf\n",
        "[campaign]\nseed = -1\n",
        "[data]\nlow = 5\nhigh = 5\n",
        "[space]\nwidth = { low = 1, high = 100000 }\nlayers = 16\n",
        "a = " + "[" * 5000 + "]" * 5000,
        "[expressions]\nx = 'a**a**a**a'\n",
        "\xff\xfe not utf-8",
    ]),
    st.text(max_size=200),
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A finished tiny campaign: two studies with trials, a model per operation."""
    import keras

    from sweep.nets.saving import serialize_model

    folder = tempfile.TemporaryDirectory(prefix="sweep-fuzz-")
    url = f"sqlite:///{Path(folder.name) / 'fuzz.db'}"
    inputs = keras.Input(shape=(2,), dtype="float64")
    model = serialize_model(keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(inputs)))
    storage = optuna.storages.RDBStorage(url)
    with Database(url) as handle:
        handle.campaigns.save("arith", CampaignConfig(operations=("add", "multiply")).to_dict())
        for operation in ("add", "multiply"):
            study = optuna.create_study(storage=storage, study_name=f"arith.{operation}")
            study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
            handle.registry.promote_if_better(
                ModelCandidate(
                    campaign="arith", operation=operation, study_name=study.study_name,
                    trial_number=0, objective_value=0.5, metrics={"test_hit_rate": 1.0},
                    params={"architecture": "2-1 linear"}, model_bytes=model,
                    keras_version=keras.__version__, tensorflow_version="2",
                )
            )
    storage.engine.dispose()
    yield url
    folder.cleanup()


def _state(url: str) -> tuple[Any, ...]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            trials = connection.execute(sqlalchemy.text(
                "SELECT study_id, state, count(*) FROM trials GROUP BY study_id, state"
            )).all()
            models = connection.execute(sqlalchemy.text(
                "SELECT campaign, operation, version, sha256, model_bytes FROM sweep_model_versions"
            )).all()
            campaigns = connection.execute(
                sqlalchemy.text("SELECT name, config FROM sweep_campaigns")
            ).all()
    finally:
        engine.dispose()
    registry = sorted(
        (c, o, v, s, hashlib.sha256(bytes(b)).hexdigest() == s) for c, o, v, s, b in models
    )
    return tuple(sorted(trials)), tuple(registry), tuple(sorted(campaigns))


@FUZZ
@given(
    command=st.sampled_from(_COMMANDS),
    words=st.lists(st.one_of(st.sampled_from(_FLAGS), _VALUES), max_size=6),
    environment=_ENVIRONMENT,
    config=_CONFIGS,
)
@pytest.mark.slow  # a real process (or several): the slow tier
def test_any_command_line_ends_cleanly_and_refusals_change_nothing(
    database: str, command: str, words: list[str], environment: dict[str, str], config: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="sweep-fuzz-run-") as scratch:
        config_path = Path(scratch) / "campaign.toml"
        config_path.write_bytes(config.encode("utf-8", "surrogateescape"))
        argv = [command, *["--config" if w == "--config" else w for w in words]]
        if "--config" in argv:
            argv.insert(argv.index("--config") + 1, str(config_path))
        if "--storage" not in argv:
            argv += ["--storage", database]
        if command == "run" and "--trials" not in argv and "--timeout" not in argv:
            argv += ["--trials", "1"]  # a run the fuzz lets through trains one short trial
        before = _state(database)
        out, err = io.StringIO(), io.StringIO()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
        env.update(environment, SWEEP_ARTIFACTS=str(Path(scratch) / "artifacts"))
        cwd = os.getcwd()
        # The dashboard serves until Ctrl-C: the fuzz presses it as soon as it is up.
        stop = mock.patch(
            "sweep.publishing.dashboard.DashboardServer.serve_forever",
            side_effect=KeyboardInterrupt,
        )
        try:
            os.chdir(scratch)
            with (
                mock.patch.dict(os.environ, env, clear=True),
                kept_affinity(),  # `worker` with SWEEP_WORKER_CORE pins this process
                stop,
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                try:
                    code = main(argv)
                except SystemExit as exit_:  # argparse: --help (0) or a bad flag (2)
                    code = exit_.code if isinstance(exit_.code, int) else 2
        finally:
            os.chdir(cwd)
        stderr = err.getvalue()
        assert "Traceback" not in stderr + out.getvalue(), (argv, stderr)
        assert code in (0, 2, 130), (argv, code, stderr)
        if code == 2:
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert len([ln for ln in lines if "error:" in ln]) == 1, (argv, stderr)
            assert _state(database) == before, argv
        assert all(ok for *_, ok in _state(database)[1]), "a model's checksum broke"
