"""MLflow tracking: the `[tracking]` key, and real sweeps logging to a real `mlflow server`
(SQLite backend, started by the test), read back with MlflowClient."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _serving import free_port

from sweep.errors import ConfigError
from sweep.search.config import CampaignConfig, config_from_toml
from sweep.search.tracking import check_mlflow_uri

SMALL = """
[data]
examples = 400
test_examples = 100
extrapolation_examples = 100
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""

# --- the campaign file's key (no server) ------------------------------------------------------


def test_tracking_is_read_stored_and_read_back() -> None:
    config = config_from_toml({"tracking": {"mlflow": "http://mlflow.internal:5000"}})
    assert config.mlflow == "http://mlflow.internal:5000"
    stored = config.to_dict()
    assert stored["tracking"] == {"mlflow": "http://mlflow.internal:5000"}
    assert CampaignConfig.from_dict(stored) == config
    assert config_from_toml({}).mlflow is None


def test_a_campaign_stored_before_tracking_still_loads() -> None:
    stored = CampaignConfig().to_dict()
    del stored["tracking"]
    assert CampaignConfig.from_dict(stored).mlflow is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mlflow": "ftp://host/x"}, "give the tracking server's http(s)://HOST:PORT"),
        ({"mlflow": "/tmp/mlruns"}, "give the tracking server's http(s)://HOST:PORT"),
        ({"mlflow": "http://"}, "give the tracking server's http(s)://HOST:PORT"),
        ({"mlflow": "http://host:notaport"}, "give the tracking server's http(s)://HOST:PORT"),
        ({"mlflow": 5000}, "tracking.mlflow must be a URL string"),
        ({"mlflow": "http://u:secret@host:5000"}, "MLFLOW_TRACKING_USERNAME"),
        ({"mlflow": "http://" + "h" * 3000}, "at most 2048 characters"),
        ({"wandb": "x"}, "unknown config key 'tracking.wandb'; allowed: mlflow"),
    ],
)
def test_a_bad_tracking_table_is_one_line(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_toml({"tracking": table})
    text = str(caught.value)
    assert message in text and "\n" not in text and len(text) < 400
    assert "secret" not in text


def test_tracking_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="tracking must be a TOML table"):
        config_from_toml({"tracking": "http://host"})
    assert check_mlflow_uri("https://mlflow.example.org/") == "https://mlflow.example.org/"


# --- real sweeps, a real server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on SQLite, its artifacts in a folder, on a free port; yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT,
        # The server's job runner (huey) is for GenAI scorers; the sweep logs runs only.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or server.poll() is not None:
                    log.flush()
                    pytest.fail(
                        "mlflow server did not start:\n"
                        + (folder / "server.log").read_text()[-3000:]
                    )
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(server.pid, 15)  # its own session: uvicorn's worker goes too
        server.wait(timeout=30)
        log.close()


def _sweep(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWEEP_ARTIFACTS": str(cwd / "artifacts")}
    for name in ("SWEEP_STORAGE", "SWEEP_CAMPAIGN"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_a_sweep_logs_each_promotion_and_only_those(
    mlflow_server: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from storage import ModelRegistry

    (tmp_path / "campaign.toml").write_text(
        SMALL + f'[campaign]\nname = "tracked"\n[tracking]\nmlflow = "{mlflow_server}"\n'
    )
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    done = _sweep("run", "--ops", "add,multiply", "--trials", "4", "--config", "campaign.toml",
                  "--storage", url, "--no-stop-when-exact", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "MLflow" not in done.stderr, done.stderr  # no warning

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["add", "multiply"]
    with ModelRegistry(url) as registry:
        for run in runs:
            operation = run.data.tags["sweep.operation"]
            assert run.data.tags["sweep.study"] == f"tracked.{operation}"
            assert run.data.params["operation"] == operation
            versions = registry.history("tracked", operation)
            assert versions, operation
            best = max(versions, key=lambda e: e.version)
            # The metrics as the best improved: one point per promoted version, at its trial.
            history = client.get_metric_history(run.info.run_id, "objective")
            assert [(int(m.step), m.value) for m in history] == sorted(
                (e.trial_number, e.objective_value) for e in versions
            )
            assert run.data.metrics["objective"] == best.objective_value
            assert run.data.tags["best.trial"] == str(best.trial_number)
            assert run.data.tags["best.architecture"] == str(best.params["architecture"])
            # Each promoted model as an artifact, and nothing else.
            folders = client.list_artifacts(run.info.run_id, "models")
            assert sorted(f.path for f in folders) == sorted(
                f"models/v{e.version}" for e in versions
            )
            name = f"tracked.{operation}-v{best.version}.keras"
            local = client.download_artifacts(
                run.info.run_id, f"models/v{best.version}/{name}", str(tmp_path / operation)
            )
            assert zipfile.is_zipfile(local)  # a .keras archive


@pytest.mark.slow
def test_a_server_that_is_gone_costs_a_warning_not_the_sweep(tmp_path: Path) -> None:
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "campaign.toml").write_text(SMALL + f'[tracking]\nmlflow = "{gone}"\n')
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    done = _sweep("run", "--ops", "add", "--trials", "3", "--config", "campaign.toml",
                  "--storage", url, "--no-stop-when-exact", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "MLflow at" in line]
    # The first promotion fails and pauses tracking: one line, whatever the promotions after.
    assert len(warnings) == 1, done.stderr
    assert "the sweep goes on" in warnings[0] and "Traceback" not in done.stderr
    from storage import ModelRegistry

    with ModelRegistry(url) as registry:
        assert registry.best("arith", "add") is not None  # the model is kept all the same
