"""MLflow tracking, optional: each operation is an MLflow run, the campaign its experiment.

Hooked on promotion (`sweep.search.promotion.PromotionHook`), so MLflow sees exactly what the
registry keeps: the best trial's metrics as they improve (one point per promotion, at the
trial's number), its parameters (tags ``best.<name>``, which change as it improves: MLflow's
params cannot), and each promoted model as an artifact (``models/v<version>/``), never a trial
that was not promoted. With no ``[tracking]`` in the campaign there is no hook at all.

MLflow is a side view: a server that goes away costs one warning line per promotion that could
not be logged (each call bounded: 2 retries, 10 s; then 60 s without trying), never a trial.
``mlflow`` is imported in a thread once a tracked campaign opens, never at ``import sweep``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sweep.errors import ConfigError, SweepError, first_line

if TYPE_CHECKING:
    from sweep.search.promotion import PromotedModel, PromotionHook

__all__ = [
    "PAUSE_SECONDS",
    "MlflowTracker",
    "check_mlflow_uri",
    "parse_tracking",
    "with_tracking",
]

TRACKING_KEYS = ("mlflow",)
MAX_URI_CHARS = 2048
# After a failed call, promotions are not logged for this long: a server that is down costs
# one bounded attempt a minute, not one per promotion.
PAUSE_SECONDS = 60.0
# MLflow's client retries 7 times over minutes and waits 120 s per request by default; these
# bound it (a user's own MLFLOW_HTTP_REQUEST_* values win).
_BOUNDED_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
STUDY_TAG = "sweep.study"
_TAG_VALUE_CHARS = 5000  # MLflow's limit on a tag value (8,000 on new servers)
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.\- /]{1,250}")


def check_mlflow_uri(uri: Any) -> str:
    """The tracking server's URL, as the campaign stores it.

    Raises:
        ConfigError: not an http(s) URL with a host, over 2,048 characters, or with a user or
            password in it (the campaign is stored in the database; MLflow reads credentials
            from ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` / ``_TOKEN``).
    """
    if not isinstance(uri, str):
        raise ConfigError(f"tracking.mlflow must be a URL string, got {uri!r:.80}")
    shown = repr(uri if len(uri) <= 80 else uri[:77] + "...")
    if len(uri) > MAX_URI_CHARS or not uri.isprintable() or " " in uri:
        raise ConfigError(
            f"tracking.mlflow {shown} is not allowed; give the tracking server's "
            f"http(s)://HOST:PORT (printable, at most {MAX_URI_CHARS} characters)"
        )
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        host = None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ConfigError(
            f"tracking.mlflow {shown} is not allowed; give the tracking server's "
            "http(s)://HOST:PORT, a server every worker reaches"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "tracking.mlflow has a user or password in it, and the campaign file is stored in "
            "the database; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN) on each worker instead"
        )
    return uri


def parse_tracking(table: Mapping[str, Any]) -> str | None:
    """The ``[tracking]`` table of a campaign file (or a stored campaign): the MLflow URL."""
    for key in table:
        if key not in TRACKING_KEYS:
            raise ConfigError(
                f"unknown config key 'tracking.{key}'; allowed: {', '.join(TRACKING_KEYS)}"
            )
    uri = table.get("mlflow")
    return None if uri is None else check_mlflow_uri(uri)


class MlflowTracker:
    """Logs a campaign's promotions to an MLflow tracking server; a `PromotionHook`."""

    def __init__(self, uri: str, campaign: str) -> None:
        self.uri = uri
        self.campaign = campaign
        self._client: Any = None
        self._experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # study name -> run id
        self._paused_until = 0.0
        self._lock = threading.Lock()  # one call at a time; promotions are rare

    def __call__(self, promoted: PromotedModel) -> None:
        """Log one promotion.

        Raises:
            SweepError: the server could not be reached or refused (one line: a warning).
        """
        with self._lock:
            if time.monotonic() < self._paused_until:
                return  # The failure was reported; the next promotion after the pause logs.
            try:
                self._log(promoted)
            except Exception as e:  # requests, MlflowException, OSError: tracking is a side view
                self._paused_until = time.monotonic() + PAUSE_SECONDS
                self._client = None  # a fresh client after the pause
                raise SweepError(
                    f"MLflow at {self.uri} did not take registry version "
                    f"{promoted.entry.version}: {first_line(e, 200)}; the sweep goes on, "
                    f"tracking resumes with a promotion after {PAUSE_SECONDS:g} s"
                ) from e

    def _connect(self) -> Any:
        if self._client is None:
            for name, value in _BOUNDED_HTTP.items():
                os.environ.setdefault(name, value)
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment(self, client: Any) -> str:
        if self._experiment_id is None:
            found = client.get_experiment_by_name(self.campaign)
            if found is None:
                try:
                    self._experiment_id = str(client.create_experiment(self.campaign))
                except Exception:  # another worker created it meanwhile
                    found = client.get_experiment_by_name(self.campaign)
                    if found is None:
                        raise
            if found is not None:
                self._experiment_id = str(found.experiment_id)
        assert self._experiment_id is not None
        return self._experiment_id

    def _run(self, client: Any, promoted: PromotedModel) -> str:
        """The operation's run: found by its study tag, else created (by one worker: the
        oldest run wins when two create at once, and the other is deleted)."""
        study = promoted.study.study_name
        if study in self._runs:
            return self._runs[study]
        experiment = self._experiment(client)
        query = {
            "experiment_ids": [experiment],
            "filter_string": f"tags.`{STUDY_TAG}` = '{study}'",
            "order_by": ["attributes.start_time ASC"],
            "max_results": 10,
        }
        runs = client.search_runs(**query)
        if not runs:
            dataset = promoted.dataset
            mine = client.create_run(
                experiment,
                run_name=dataset.operation.name,
                tags={STUDY_TAG: study, "sweep.campaign": self.campaign,
                      "sweep.operation": dataset.operation.name},
            ).info.run_id
            client.log_batch(mine, params=_operation_params(promoted))
            runs = client.search_runs(**query)
            oldest = runs[0].info.run_id if runs else mine
            if oldest != mine:
                client.delete_run(mine)
            self._runs[study] = oldest
        else:
            self._runs[study] = runs[0].info.run_id
        return self._runs[study]

    def _log(self, promoted: PromotedModel) -> None:
        from mlflow.entities import Metric, RunTag

        client = self._connect()
        run = self._run(client, promoted)
        entry = promoted.entry
        now = int(time.time() * 1000)
        values = {**entry.metrics, "objective": entry.objective_value,
                  "registry_version": float(entry.version)}
        metrics = [
            Metric(name, float(value), now, entry.trial_number)
            for name, value in values.items()
            if _METRIC_NAME.fullmatch(name)
        ]
        tags = [
            RunTag("best.trial", str(entry.trial_number)),
            RunTag("best.registry_version", str(entry.version)),
            RunTag("best.sha256", entry.sha256),
            *(RunTag(f"best.{name}"[:250], str(value)[:_TAG_VALUE_CHARS])
              for name, value in sorted(entry.params.items())),
        ]
        client.log_batch(run, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory(prefix="sweep-mlflow-") as scratch:
            path = Path(scratch) / f"{entry.study_name}-v{entry.version}.keras"
            path.write_bytes(promoted.model.to_bytes())
            client.log_artifact(run, str(path), artifact_path=f"models/v{entry.version}")


def _operation_params(promoted: PromotedModel) -> list[Any]:
    """What the run is about, fixed for its life (MLflow params cannot change)."""
    from mlflow.entities import Param

    operation = promoted.dataset.operation
    values = {
        "campaign": promoted.entry.campaign,
        "operation": operation.name,
        "formula": operation.description,
        "inputs": ", ".join(operation.inputs),
    }
    return [Param(name, value[:_TAG_VALUE_CHARS]) for name, value in values.items()]


def _chained(first: PromotionHook, second: PromotionHook) -> PromotionHook:
    """Both hooks, the second even when the first fails; their failures as one warning line."""

    def both(promoted: PromotedModel) -> None:
        failures: list[str] = []
        for hook in (first, second):
            try:
                hook(promoted)
            except SweepError as e:
                failures.append(str(e))
        if failures:
            raise SweepError("; ".join(failures))

    return both


def with_tracking(
    uri: str | None, campaign: str, hook: PromotionHook | None
) -> PromotionHook | None:
    """`hook`, followed by an `MlflowTracker` when the campaign names a server; else `hook`.

    Raises:
        ConfigError: the campaign tracks in MLflow and this host has no MLflow client (checked
            before any trial runs).
    """
    if uri is None:
        return hook
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            f"campaign {campaign!r} is tracked in MLflow ([tracking] mlflow = {uri!r}) and "
            "this host has no MLflow client; pip install 'neural-arithmetic-sweep[mlflow]'"
        )
    # MLflow's client takes 2-4 s to import: loaded beside the campaign's preparation, not
    # inside the first promotion's trial.
    threading.Thread(target=_preload_mlflow, name="mlflow-import", daemon=True).start()
    tracker = MlflowTracker(uri, campaign)
    return tracker if hook is None else _chained(hook, tracker)


def _preload_mlflow() -> None:
    try:
        import mlflow.entities
        import mlflow.tracking  # noqa: F401
    except Exception:  # reported by the first promotion, which imports it again
        pass
