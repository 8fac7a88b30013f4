"""The SWEEP_* settings: typed, refused in one line when they do not parse, all documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.errors import ConfigError
from sweep.settings import VARIABLES, S3Location, Settings, parse_artifact_place

README = Path(__file__).resolve().parents[2] / "README.md"


def test_unset_means_the_defaults() -> None:
    assert Settings.from_environment({}) == Settings()


def test_values_are_parsed_to_their_types() -> None:
    parsed = Settings.from_environment(
        {
            "SWEEP_STORAGE": "sqlite:///x.db",
            "SWEEP_CAMPAIGN": "night",
            "SWEEP_ARTIFACTS": "out",
            "SWEEP_DATABASE_PATIENCE": "2.5",
            "SWEEP_HEARTBEAT_INTERVAL": "3",
            "SWEEP_GRACE_PERIOD": "9",
            "SWEEP_PIN_WORKERS": "on",
            "SWEEP_WORKERS": "4",
            "SWEEP_WORKER_CORE": "1",
            "SWEEP_PARENT_PID": "1",
            "SWEEP_TF_VERBOSE": "yes",
        }
    )
    assert parsed == Settings(
        storage="sqlite:///x.db", campaign="night", artifacts=Path("out"),
        database_patience=2.5, heartbeat_interval=3, grace_period=9, pin_workers=True,
        workers=4, worker_core=1, parent_pid=1, tf_verbose=True,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWEEP_DATABASE_PATIENCE", "soon"),
        ("SWEEP_DATABASE_PATIENCE", "inf"),
        ("SWEEP_DATABASE_PATIENCE", "-1"),
        ("SWEEP_HEARTBEAT_INTERVAL", "0"),
        ("SWEEP_GRACE_PERIOD", "1.5"),
        ("SWEEP_PIN_WORKERS", "maybe"),
        ("SWEEP_WORKERS", "0"),
        ("SWEEP_WORKER_CORE", "-3"),
        ("SWEEP_PARENT_PID", "abc"),
        ("SWEEP_TF_VERBOSE", "2"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}=") and "\n" not in message


def test_a_huge_value_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment({"SWEEP_WORKERS": "9" * 100_000})
    assert len(str(caught.value)) < 200


def test_the_readme_lists_every_variable() -> None:
    text = README.read_text()
    missing = [name for name in VARIABLES if f"`{name}`" not in text]
    assert not missing, missing


@pytest.mark.parametrize(
    ("environment", "named", "allowed"),
    [
        ({"SWEEP_GRACE_PERIOD": "15"}, "SWEEP_GRACE_PERIOD='15'", "at least 20 s"),
        ({"SWEEP_HEARTBEAT_INTERVAL": "20"}, "SWEEP_GRACE_PERIOD=30 (the default)", "at least 40"),
        (
            {"SWEEP_HEARTBEAT_INTERVAL": "10", "SWEEP_GRACE_PERIOD": "10"},
            "SWEEP_HEARTBEAT_INTERVAL='10'",
            "at least 20 s",
        ),
        (
            {"SWEEP_WORKER_CORE": "1", "SWEEP_PIN_WORKERS": "off"},
            "SWEEP_PIN_WORKERS='off'",
            "unset one of them",
        ),
    ],
)
def test_settings_that_contradict_each_other_are_refused_in_one_line(
    environment: dict[str, str], named: str, allowed: str
) -> None:
    """Each value is valid alone. A grace period under two heartbeat intervals lets a worker
    fail another's live trial as stale (Optuna fails a trial whose last beat is older than the
    grace period; a beat is due every interval, plus the time its write takes)."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment(environment)
    message = str(caught.value)
    assert named in message and allowed in message and "\n" not in message
    assert message.count("SWEEP_") == 2, message


def test_a_grace_period_of_two_heartbeats_and_pinning_alone_are_allowed() -> None:
    assert Settings.from_environment(
        {"SWEEP_HEARTBEAT_INTERVAL": "1", "SWEEP_GRACE_PERIOD": "2"}
    ).grace_period == 2
    assert Settings.from_environment({"SWEEP_PIN_WORKERS": "0"}).pin_workers is False
    assert Settings.from_environment({"SWEEP_WORKER_CORE": "0"}).worker_core == 0


def test_a_contradiction_is_one_line_and_exit_2_before_anything_is_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweep import settings
    from sweep.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "10")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "5")
    try:
        code = main(["worker", "--storage", f"sqlite:///{tmp_path / 'sweeps.db'}"])
    finally:
        monkeypatch.undo()
        settings.refresh()
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("sweep: error: SWEEP_GRACE_PERIOD='5' is less than twice")
    assert not (tmp_path / "sweeps.db").exists()


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("out/artifacts", Path("out/artifacts")),
        ("/shared/sweep", Path("/shared/sweep")),
        ("s3://sweep-artifacts", S3Location("sweep-artifacts", "")),
        ("s3://sweep-artifacts/", S3Location("sweep-artifacts", "")),
        ("s3://team.bucket/night/run-1/", S3Location("team.bucket", "night/run-1")),
        ("S3://b-1/x", S3Location("b-1", "x")),
    ],
)
def test_artifacts_are_a_folder_or_a_bucket(text: str, place: object) -> None:
    assert Settings.from_environment({"SWEEP_ARTIFACTS": text}).artifacts == place


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("gs://bucket/x", "scheme 'gs' is not supported; give a folder or s3://BUCKET/PREFIX"),
        ("http://minio:9000/b", "scheme 'http' is not supported"),
        ("s3://Upper_Case", "is not an S3 bucket name"),
        ("s3://ab", "is not an S3 bucket name"),
        ("s3://a..b", "is not an S3 bucket name"),
        ("s3://bucket/a//b", "has an empty, '.' or '..' part"),
        ("s3://bucket/../up", "has an empty, '.' or '..' part"),
        ("s3://bucket/" + "x" * 2000, "at most 1024 characters"),
        ("folder\x00name", "printable"),
    ],
)
def test_a_bad_artifact_place_is_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment({"SWEEP_ARTIFACTS": text})
    shown = str(caught.value)
    assert message in shown and "SWEEP_ARTIFACTS=" in shown
    assert "\n" not in shown and len(shown) < 300


def test_the_flag_is_named_in_its_own_error() -> None:
    with pytest.raises(ConfigError, match=r"^--artifacts='s3://' names no bucket"):
        parse_artifact_place("s3://", "--artifacts")
    assert str(S3Location("b", "p/q")) == "s3://b/p/q"
    assert str(S3Location("b")) == "s3://b"
