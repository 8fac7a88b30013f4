"""Artifacts in an S3-compatible bucket: a real S3 server (moto, in its own process), a worker
process that attaches, and a real `sweep dashboard` process that serves what it attached."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _serving import free_port

from sweep.errors import ConfigError, DashboardError
from sweep.publishing.artifacts import open_s3_store
from sweep.settings import S3Location

pytestmark = pytest.mark.slow

BUCKET = "sweep-artifacts"
PREFIX = "team/night"
SMALL = """
[data]
examples = 400
test_examples = 100
extrapolation_examples = 100
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""


class S3Server:
    """moto's S3-compatible server in its own process on a free port of 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = (folder / "moto.log").open("w")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    pytest.fail(f"moto's S3 server did not start on {self.url}")
                time.sleep(0.2)
        _s3_client(self.url).create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One S3 server for the module; yields its URL, with BUCKET made."""
    server = S3Server(tmp_path_factory.mktemp("moto"))
    try:
        yield server.url
    finally:
        server.stop()


def _aws_environment(endpoint: str, tmp: Path) -> dict[str, str]:
    """The standard AWS variables, pointed at the test's server and nowhere else."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def aws(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = _aws_environment(s3_endpoint, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


# --- the store ---------------------------------------------------------------------------------


def test_a_store_writes_under_its_prefix_and_reads_back(
    aws: dict[str, str], s3_endpoint: str
) -> None:
    import io

    store = open_s3_store(S3Location(BUCKET, "unit/store"), ConfigError)
    store.write("abc-123", io.BytesIO(b"model bytes"))
    assert store.open_reader("abc-123").read() == b"model bytes"
    listed = _s3_client(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="unit/store/")
    assert [item["Key"] for item in listed["Contents"]] == ["unit/store/abc-123"]
    store.remove("abc-123")
    assert "Contents" not in _s3_client(s3_endpoint).list_objects_v2(
        Bucket=BUCKET, Prefix="unit/store/"
    )


def _refusal(location: S3Location) -> str:
    with pytest.raises(DashboardError) as caught:
        open_s3_store(location, DashboardError)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_missing_bucket_is_one_line(aws: dict[str, str]) -> None:
    message = _refusal(S3Location("no-such-bucket", "x"))
    assert "bucket 'no-such-bucket' does not exist at http://127.0.0.1:" in message


def test_no_credentials_is_one_line(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    message = _refusal(S3Location("creds-bucket"))
    assert "no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message


def test_an_unreachable_endpoint_is_one_line(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()  # nothing listens there: refused at once, retried a bounded number
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    message = _refusal(S3Location("unreachable-bucket"))
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{closed}" in message
    assert "check AWS_ENDPOINT_URL" in message


def test_an_endpoint_that_is_not_a_url_is_one_line(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    assert "cannot open artifacts in s3://bad-endpoint-bucket" in _refusal(
        S3Location("bad-endpoint-bucket")
    )


def test_a_bucket_that_goes_away_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    from sweep.publishing.artifacts import attach_artifact

    server = S3Server(tmp_path)
    try:
        for name, value in _aws_environment(server.url, tmp_path).items():
            monkeypatch.setenv(name, value)
        store = open_s3_store(S3Location(BUCKET, "goes-away"), ConfigError)  # probed: fine
    finally:
        server.stop()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'gone.db'}")
    trial = study.ask()
    model = tmp_path / "m.keras"
    model.write_bytes(b"PK model")
    frozen = study.trials[trial.number]
    with pytest.raises(Exception) as caught:  # the caller turns it into one warning line
        attach_artifact(store, model, frozen, study._storage)
    assert "Could not connect to the endpoint URL" in str(caught.value)
    assert not optuna.artifacts.get_all_artifact_meta(
        study.trials[trial.number], storage=study._storage
    )


# --- the CLI: refused before any trial ----------------------------------------------------------


def _sweep(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    full.pop("SWEEP_STORAGE", None)
    full.pop("SWEEP_CAMPAIGN", None)
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd, env=full, capture_output=True,
        text=True, timeout=timeout,
    )


@pytest.mark.parametrize(
    ("artifacts", "message"),
    [
        ("s3://", "SWEEP_ARTIFACTS='s3://' names no bucket; give a folder or s3://BUCKET/PREFIX"),
        ("ftp://host/x", "scheme 'ftp' is not supported"),
        (f"s3://missing-{BUCKET}/x", f"bucket 'missing-{BUCKET}' does not exist"),
    ],
    ids=["no-bucket", "unknown-scheme", "missing-bucket"],
)
def test_sweep_run_refuses_bad_artifacts_before_any_trial(
    artifacts: str, message: str, s3_endpoint: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    env = {**_aws_environment(s3_endpoint, tmp_path), "SWEEP_ARTIFACTS": artifacts}
    done = _sweep("run", "--ops", "add", "--trials", "1", "--storage", url, cwd=tmp_path,
                  env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    # Refused before the campaign was prepared: no study, no trial.
    if (tmp_path / "sweeps.db").exists():
        import optuna

        assert optuna.get_all_study_summaries(url) == []


def test_sweep_dashboard_refuses_a_missing_bucket(s3_endpoint: str, tmp_path: Path) -> None:
    done = _sweep(
        "dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--port", "0",
        "--artifacts", f"s3://missing-{BUCKET}", cwd=tmp_path,
        env=_aws_environment(s3_endpoint, tmp_path), timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr


# --- end to end: a worker on one host, the dashboard on another ---------------------------------


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: bytes = response.read()
        return data


def test_a_worker_attaches_and_a_dashboard_elsewhere_shows_it(
    s3_endpoint: str, tmp_path: Path
) -> None:
    place = f"s3://{BUCKET}/{PREFIX}"
    database = tmp_path / "shared" / "sweeps.db"
    database.parent.mkdir()
    url = f"sqlite:///{database}"
    worker_host = tmp_path / "worker-host"
    dashboard_host = tmp_path / "dashboard-host"
    worker_host.mkdir()
    dashboard_host.mkdir()
    env = {**_aws_environment(s3_endpoint, tmp_path), "SWEEP_ARTIFACTS": place}
    (worker_host / "small.toml").write_text(SMALL)
    done = _sweep("run", "--ops", "add", "--trials", "2", "--config", "small.toml",
                  "--storage", url, cwd=worker_host, env=env)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr
    assert not (worker_host / "sweep-artifacts").exists()  # nothing kept on the worker's disk
    keys = [
        item["Key"]
        for item in _s3_client(s3_endpoint).list_objects_v2(
            Bucket=BUCKET, Prefix=f"{PREFIX}/"
        ).get("Contents", [])
    ]
    assert keys, "the worker attached nothing to the bucket"

    dashboard = subprocess.Popen(
        [sys.executable, "-m", "sweep", "dashboard", "--storage", url, "--port", "0",
         "--read-only"],  # the bucket from SWEEP_ARTIFACTS, as a deployment sets it
        cwd=dashboard_host, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert dashboard.stdout is not None
        first = dashboard.stdout.readline()
        assert f"artifacts from {place}" in first, first
        found = re.search(r"http://127\.0\.0\.1:\d+", dashboard.stdout.readline())
        assert found is not None
        base = found.group(0)
        summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
        study = next(s for s in summaries if s["study_name"] == "arith.add")
        detail = json.loads(_get(f"{base}/api/studies/{study['study_id']}"))
        attached = [
            (trial["trial_id"], artifact)
            for trial in detail["trials"]
            for artifact in trial["artifacts"]
        ]
        by_suffix = {Path(a["filename"]).suffix: (t, a) for t, a in attached}
        assert set(by_suffix) == {".keras", ".png"}, attached
        for suffix, magic in ((".keras", b"PK"), (".png", b"\x89PNG\r\n\x1a\n")):
            trial_id, artifact = by_suffix[suffix]
            served = _get(f"{base}/artifacts/{study['study_id']}/{trial_id}/"
                          f"{artifact['artifact_id']}")
            assert served.startswith(magic)
            stored = _s3_client(s3_endpoint).get_object(
                Bucket=BUCKET, Key=f"{PREFIX}/{artifact['artifact_id']}"
            )["Body"].read()
            assert served == stored
    finally:
        dashboard.terminate()
        dashboard.communicate(timeout=30)
