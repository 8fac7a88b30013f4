"""Round two of the fault suite: what a careless or hostile user did to break the CLI.

Each test reproduces one reported case (the issue's numbering is in the test's docstring) with
real databases, and checks the class of the case, not just the example. A command's message and
exit code are checked in this process (`sweep.cli.main`): none of these cases is about the
process itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from _fault_helpers import assert_one_line_error, run_main, sweep_env

from storage import (
    CampaignConflict,
    DamagedRegistry,
    Database,
    ModelCandidate,
    ModelRegistry,
    PromotionRefused,
)
from sweep.nets import ModelSpec
from sweep.nets.training import KerasTrainer
from sweep.problem.data import DataSpec, make_dataset
from sweep.problem.metrics import evaluate_splits
from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.search._optuna.internals import still_running
from sweep.search.config import CampaignConfig
from sweep.search.promotion import Promoter

LINEAR = ModelSpec(
    hidden_layers=(), activation="linear", input_normalization="none",
    target_normalization="none", learning_rate=0.01, batch_size=128, loss="mse", epochs=2,
    lr_schedule="cosine", refit_output=True,
)


def _trained_add() -> tuple[object, object]:
    dataset = make_dataset(BUILTIN_OPERATIONS["add"], DataSpec(examples=2000))
    model = KerasTrainer().train(
        LINEAR, dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val
    )
    return model, dataset


@pytest.fixture(scope="module")
def trained_add() -> tuple[object, object]:
    return _trained_add()


def _seed_registry(url: str, trained: tuple[object, object], operations: tuple[str, ...]) -> None:
    """One real (exact) add model promoted under each operation name, as a sweep would."""
    model, dataset = trained
    data = model.to_bytes()  # type: ignore[attr-defined]
    metrics = evaluate_splits(model.predict, dataset)  # type: ignore[attr-defined,arg-type]
    with Database(url) as database:
        database.campaigns.save("arith", CampaignConfig().to_dict())
        for operation in operations:
            database.registry.promote_if_better(
                ModelCandidate(
                    campaign="arith", operation=operation, study_name=f"arith.{operation}",
                    trial_number=0, objective_value=metrics["val_mae"], metrics=metrics,
                    params={"architecture": "2-1 linear"}, model_bytes=data,
                    keras_version="3.15.1", tensorflow_version="2.21.0",
                )
            )


# --- 1. output paths ------------------------------------------------------------------------


@pytest.mark.timeout(240)  # (a FIFO opened for writing would block: a bound, as a process had)
@pytest.mark.parametrize("command", ["report", "pull"])
def test_outputs_never_replace_the_database_a_fifo_or_a_file_without_force(
    command: str, tmp_path: Path, trained_add: tuple[object, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Case 1: `report -o v.db --storage sqlite:///v.db` replaced the database with HTML; a
    campaign TOML or a FIFO likewise. Every output path is checked the same way."""
    suffix = ".keras" if command == "pull" else ""  # pull writes .keras files only
    database = tmp_path / f"v.db{suffix}"
    url = f"sqlite:///{database}"
    _seed_registry(url, trained_add, ("add",))
    before = database.read_bytes()
    kept = tmp_path / f"campaign.toml{suffix}"
    kept.write_text("[campaign]\ntrials = 3\n")
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    link = tmp_path / f"link{suffix}"
    link.symlink_to(kept)
    env = sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith")
    prefix = ["report", "-o"] if command == "report" else ["pull", "add", "-o"]
    cases = {
        database: "storage's own database",
        kept: "exists; pass --force",
        fifo: "not a regular file",
        link: "symbolic link",
    }
    if command == "report":
        cases[Path(f"{database}-wal")] = "storage's own database"
        cases[Path("/proc/self/fd/1")] = "symbolic link"
    for target, expected in cases.items():
        done = run_main([*prefix, str(target)], env, tmp_path, capsys)
        assert done.returncode == 2, (target, done.stdout, done.stderr)
        assert_one_line_error(done.stderr, expected)
        # --force overwrites a regular file, but never the database, a FIFO or a link.
        if target != kept:
            forced = run_main([*prefix, str(target), "--force"], env, tmp_path, capsys)
            assert forced.returncode == 2, (target, forced.stderr)
            assert_one_line_error(forced.stderr, expected)
    assert database.read_bytes()[:16] == before[:16] == b"SQLite format 3\x00"
    assert kept.read_text() == "[campaign]\ntrials = 3\n"
    done = run_main([*prefix, str(kept), "--force"], env, tmp_path, capsys)
    assert done.returncode == 0, done.stderr
    assert kept.read_bytes() != b"[campaign]\ntrials = 3\n"


# --- 2. names that differ only by case ------------------------------------------------------


def test_a_campaign_name_that_differs_only_by_case_is_refused(storage_url: str) -> None:
    """Case 2: on MariaDB `--campaign arith` and `--campaign ARITH` shared one study (Optuna's
    study names compare case-insensitively there); refused on every backend, alike."""
    with Database(storage_url) as database:
        database.campaigns.register("arith", lambda stored: {"seed": 0})
        with pytest.raises(CampaignConflict, match="only by case") as caught:
            database.campaigns.register("ARITH", lambda stored: {"seed": 0})
        assert "\n" not in str(caught.value)
        assert database.campaigns.names() == ["arith"]


# --- 3. two runs creating one campaign at once ----------------------------------------------


def test_a_run_that_lost_the_creation_race_never_overwrites_the_identity(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 3: two `sweep run` with different seeds on a fresh database at once; the one that
    read "no campaign" before the other created it overwrote the stored identity.

    The race is made deterministic: the loser's first read is forced to see no campaign."""
    import sweep.search.campaign as campaign_module
    from sweep.errors import ConfigError
    from sweep.search.campaign import Campaign

    base = CampaignConfig(name="race", operations=("add",), trials=1)
    with Campaign(base, Database(storage_url), KerasTrainer()):
        pass  # the winner created the campaign with seed 0
    monkeypatch.setattr(campaign_module, "load_campaign_config", lambda campaigns, name: None)
    loser = replace(base, seed=1, data=replace(base.data, seed=1))
    with pytest.raises(ConfigError, match="already exists with a different seed"):
        Campaign(loser, Database(storage_url), KerasTrainer())
    with Database(storage_url) as database:
        stored = database.campaigns.load("race")
    assert stored is not None and stored["seed"] == 0
    monkeypatch.undo()
    with Campaign(base, Database(storage_url), KerasTrainer()):  # the campaign still works
        pass


# --- 4. promotion of a trial another worker finished ----------------------------------------


def test_a_trial_failed_by_another_worker_is_not_promoted(
    storage_url: str, trained_add: tuple[object, object]
) -> None:
    """Case 4: a worker stopped (SIGSTOP) before promotion, whose trial was failed as stale
    meanwhile, promoted the FAIL trial's model when it resumed."""
    model, dataset = trained_add
    study = optuna.create_study(storage=storage_url, study_name="arith.add")
    trial = study.ask()
    metrics = evaluate_splits(model.predict, dataset)  # type: ignore[attr-defined,arg-type]
    guard = still_running(trial)
    # Another worker, through its own storage, fails the trial as stale.
    other = optuna.storages.RDBStorage(storage_url)
    other.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    registry = ModelRegistry(storage_url)
    promoter = Promoter(registry, KerasTrainer(), "arith", "mae")
    with pytest.raises(PromotionRefused, match=f"trial {trial.number} is FAIL"):
        promoter.promote(
            dataset=dataset, study_name="arith.add", trial_number=trial.number,  # type: ignore[arg-type]
            model=model, metrics=metrics, params={}, guard=guard,  # type: ignore[arg-type]
        )
    assert registry.history("arith", "add") == []
    # A running trial is promoted as before.
    running = study.ask()
    entry = promoter.promote(
        dataset=dataset, study_name="arith.add", trial_number=running.number,  # type: ignore[arg-type]
        model=model, metrics=metrics, params={}, guard=still_running(running),  # type: ignore[arg-type]
    )
    assert entry is not None and entry.trial_number == running.number
    registry.close()
    other.engine.dispose()


# --- 5. a best row pointing at another operation's model ------------------------------------


def test_a_best_row_pointing_at_another_operation_is_refused(
    storage_url: str, tmp_path: Path, trained_add: tuple[object, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Case 5: `pull multiply` wrote the add model, `predict multiply 3 4` answered 7."""
    _seed_registry(storage_url, trained_add, ("add", "multiply"))
    engine = sqlalchemy.create_engine(storage_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        add_id = connection.execute(
            sqlalchemy.text("SELECT id FROM sweep_model_versions WHERE operation = 'add'")
        ).scalar_one()
        connection.execute(
            sqlalchemy.text("UPDATE sweep_best SET version_id = :id WHERE operation = 'multiply'"),
            {"id": add_id},
        )
    engine.dispose()
    env = sweep_env(storage_url, tmp_path, SWEEP_CAMPAIGN="arith")
    for args in (["pull", "multiply"], ["predict", "multiply", "3", "4"], ["best"]):
        done = run_main(args, env, tmp_path, capsys)
        assert done.returncode == 2, (args, done.stdout)
        assert_one_line_error(done.stderr, "multiply", "add")
    assert not (tmp_path / "multiply.keras").exists()
    with ModelRegistry(storage_url) as registry, pytest.raises(DamagedRegistry):
        registry.fetch("arith", "multiply")


# --- 12, 14. damaged rows and absurd versions -----------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("metrics", "not json"),
        ("params", "[1, 2]"),
        ("trial_number", "x"),
        ("created_at", "yesterday"),
    ],
)
def test_damaged_registry_rows_are_one_line_not_a_traceback(
    column: str, value: str, tmp_path: Path, trained_add: tuple[object, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Case 12 (SQLite, which stores whatever it is given): `best`, `models`, `pull`,
    `predict` and `sweep.load_best_model` each fail in one line naming the damage."""
    import sweep
    from storage import StorageError

    url = f"sqlite:///{tmp_path / 'damaged.db'}"
    _seed_registry(url, trained_add, ("add",))
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"UPDATE sweep_model_versions SET {column} = :v"),
                           {"v": value})
    engine.dispose()
    env = sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith")
    for args in (["best"], ["models"], ["pull", "add"], ["predict", "add", "1", "2"]):
        done = run_main(args, env, tmp_path, capsys)
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line_error(done.stderr, "damaged")
    with pytest.raises(StorageError, match="damaged"):
        sweep.load_best_model("add", storage=url, campaign="arith")


def test_a_damaged_campaign_row_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Database(url) as database:
        database.campaigns.save("arith", CampaignConfig().to_dict())
    engine = sqlalchemy.create_engine(url)
    for value in ("{not json", "[1, 2]", json.dumps({"name": "arith", "seed": "zero"})):
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE sweep_campaigns SET config = :v"),
                               {"v": value})
        for args in (["run", "--ops", "add", "--trials", "1"], ["worker"], ["predict", "add",
                                                                           "1", "2"]):
            done = run_main(args, sweep_env(url, tmp_path), tmp_path, capsys)
            assert done.returncode == 2, (value, args, done.stderr)
            assert_one_line_error(done.stderr, "arith")
    engine.dispose()


def test_an_absurd_version_is_not_found_not_an_overflow(
    tmp_path: Path, trained_add: tuple[object, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 14: `pull --version 99999999999999999999` on SQLite raised OverflowError."""
    url = f"sqlite:///{tmp_path / 'v.db'}"
    _seed_registry(url, trained_add, ("add",))
    env = sweep_env(url, tmp_path, SWEEP_CAMPAIGN="arith")
    done = run_main(["pull", "add", "--version", "9" * 20], env, tmp_path, capsys)
    assert done.returncode == 2
    assert "out of range" in done.stderr and "Traceback" not in done.stderr
    with ModelRegistry(url) as registry:
        from storage import ModelNotFound

        with pytest.raises(ModelNotFound, match="versions that exist: 1"):
            registry.fetch("arith", "add", 10**20)
