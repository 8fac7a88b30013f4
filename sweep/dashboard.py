"""What a person sees in optuna-dashboard: a study note and artifacts for the best trial, and the
dashboard itself, served on the sweep's own storage.

The note is written with `optuna_dashboard.save_note`, the artifacts in the format of
`optuna.artifacts.upload_artifact` (file first, then its record: see `_attach_artifact`), so a
stock ``optuna-dashboard URL --artifact-dir DIR`` shows them as well as `sweep dashboard` does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mimetypes
import os
import socket
import socketserver
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import keras
import numpy as np
import optuna
from optuna.trial import FrozenTrial

from storage import ModelEntry, check_reachable, engine_options, mask_url, normalize_storage_url
from storage.engine import sqlite_path
from sweep._format import format_value as _fmt
from sweep.data import Dataset, extrapolation_band
from sweep.errors import SweepError
from sweep.export import serialize_model
from sweep.metrics import evaluate
from sweep.model import predict

__all__ = [
    "ARTIFACTS_ENV_VAR",
    "DashboardError",
    "DashboardServer",
    "PublishError",
    "default_artifact_dir",
    "open_dashboard",
    "publish_best",
    "serve_dashboard",
    "study_note",
]

ARTIFACTS_ENV_VAR = "SWEEP_ARTIFACTS"
DEFAULT_ARTIFACT_DIR = "sweep-artifacts"


class PublishError(SweepError):
    """The study note or the artifacts could not be written; the model itself is safe."""


class DashboardError(SweepError):
    """The dashboard cannot start (port in use, missing database or artifact folder)."""


def default_artifact_dir() -> Path:
    """``$SWEEP_ARTIFACTS``, else ``./sweep-artifacts``: the folder the sweep and the
    dashboard share (the same volume in docker-compose)."""
    return Path(os.environ.get(ARTIFACTS_ENV_VAR, "").strip() or DEFAULT_ARTIFACT_DIR)


# --- study note and artifacts -----------------------------------------------------------------


def _code(value: Any) -> str:
    """Markdown inline code; backticks inside would end it early."""
    return "`" + str(value).replace("`", "'").replace("|", "/") + "`"


def study_note(
    entry: ModelEntry,
    dataset: Dataset,
    artifacts: Mapping[str, str] | None = None,
) -> str:
    """The Markdown note for a study: what won, how, and how well, from the registry entry."""
    p, m = entry.params, entry.metrics
    spec = dataset.spec
    band = extrapolation_band(spec.low, spec.high)
    op = dataset.operation
    variables = "a" if op.arity == 1 else "a, b"
    parameters = p.get("parameters")
    rows = [
        ("operation", f"{_code(op.name)}: {_code(op.description)}"),
        ("architecture", f"{_code(p.get('architecture', '?'))}"
         + (f" ({parameters:,} parameters)" if isinstance(parameters, int) else "")),
        ("normalisation (input / target)",
         f"{_code(p.get('input_normalization', '?'))} / "
         f"{_code(p.get('target_normalization', '?'))}"),
        ("learning rate", f"{_fmt(p.get('learning_rate'), 3)} ({_fmt(p.get('lr_schedule'))})"),
        ("loss, batch size", f"{_fmt(p.get('loss'))}, {_fmt(p.get('batch_size'))}"),
        ("registry", f"version {entry.version}, sha256 {_code(entry.sha256[:12])}, "
         f"{entry.size_bytes:,} bytes"),
        ("validation objective", _fmt(entry.objective_value, 6)),
    ]
    lines = [
        f"## Best model: trial {entry.trial_number}, registry version {entry.version}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
        "### Errors in original units",
        "",
        "| set | MAE | median relative error | max absolute error | hit rate | pairs |",
        "|---|---|---|---|---|---|",
    ]
    for label, prefix in (
        (f"unseen in-range pairs, {variables} in [{spec.low}, {spec.high})", "test_"),
        (f"extrapolation band, {variables} in [{band[0]}, {band[1]})", "extrapolation_"),
    ):
        count = m.get(f"{prefix}count")
        lines.append(
            f"| {label} | {_fmt(m.get(f'{prefix}mae'))} "
            f"| {_fmt(m.get(f'{prefix}median_relative_error'))} "
            f"| {_fmt(m.get(f'{prefix}max_absolute_error'))} "
            f"| {_fmt(m.get(f'{prefix}hit_rate'))} "
            f"| {_fmt(int(count) if isinstance(count, int | float) else count)} |"
        )
    hit = "rounded prediction equals the truth" if op.integer_valued else "relative error ≤ 1e-6"
    lines += ["", f"A hit: {hit}."]
    if artifacts:
        where = ", ".join(_code(name) for name in artifacts)
        lines += ["", f"Artifacts ({next(iter(artifacts.values()))}): {where}."]
    lines += [
        "",
        f"_Written by `sweep` at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; "
        "`sweep pull` fetches this model._",
    ]
    return "\n".join(lines) + "\n"


def _frozen_trial(study: optuna.Study, trial_number: int) -> FrozenTrial:
    storage = study._storage
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
    except KeyError:
        raise PublishError(f"study {study.study_name!r} has no trial {trial_number}") from None
    return storage.get_trial(trial_id)


def _writable_folder(folder: Path) -> Path:
    """Create the artifact folder if needed and prove it takes a file.

    Checked first, so an unwritable folder costs one clear warning and no half-done work.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sweep-probe-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PublishError(f"artifact folder {str(folder)!r} is not writable: {reason}") from None
    return folder


def publish_best(
    study: optuna.Study,
    trial_number: int,
    entry: ModelEntry,
    model: keras.Model,
    dataset: Dataset,
    artifact_dir: str | os.PathLike[str] | None,
) -> None:
    """Refresh the study note for a newly promoted model; attach the model and a plot as artifacts.

    Call it right after a promotion, while the trial is still running (inside the objective):
    Optuna only attaches artifacts to unfinished trials. For a finished trial the artifacts go to
    the study instead, with the note naming the trial.

    Args:
        study: The operation's study.
        trial_number: The promoted trial.
        entry: The registry entry `promote` returned.
        model: The promoted model (the plot shows its predictions on the extrapolation band).
        dataset: The operation's dataset.
        artifact_dir: The artifact folder shared with the dashboard; None writes the note only.

    Raises:
        PublishError: The note or the artifacts could not be written (one line; the caller
            should warn and go on: the model is already in the registry).
    """
    artifacts: dict[str, str] = {}
    target: FrozenTrial | optuna.Study | None = None
    folder_error: PublishError | None = None
    folder: Path | None = None
    if artifact_dir is not None:
        try:
            folder = _writable_folder(Path(artifact_dir))
        except PublishError as e:
            folder_error = e  # The note is still worth writing; report the folder after it.
        else:
            trial = _frozen_trial(study, trial_number)
            target = study if trial.state.is_finished() else trial
            where = "on the study" if target is study else f"on trial {trial_number}"
            stem = f"{study.study_name}-v{entry.version}"
            artifacts = {f"{stem}.keras": where, f"{stem}-extrapolation.png": where}
    try:
        _save_note(study, study_note(entry, dataset, artifacts))
    except PublishError:
        raise
    except Exception as e:  # Storage errors of every kind: publishing is best effort.
        raise PublishError(f"cannot save the note of {study.study_name!r}: {_first_line(e)}") from e
    if folder_error is not None:
        raise folder_error
    if folder is None or target is None:
        return
    store = optuna.artifacts.FileSystemArtifactStore(folder)
    with tempfile.TemporaryDirectory(prefix="sweep-artifacts-") as scratch:
        model_path = Path(scratch) / f"{study.study_name}-v{entry.version}.keras"
        plot_path = Path(scratch) / f"{study.study_name}-v{entry.version}-extrapolation.png"
        try:
            plot_path.write_bytes(extrapolation_plot(model, dataset, entry))
            model_path.write_bytes(serialize_model(model))
        except (SweepError, OSError) as e:
            raise PublishError(f"cannot prepare the artifacts: {_first_line(e)}") from e
        attached: dict[str, str] = {}
        try:
            for path in (model_path, plot_path):
                _attach_artifact(store, path, target, study._storage)
                attached[path.name] = artifacts[path.name]
        except Exception as e:
            if attached != artifacts:  # The note must not promise what is not there.
                with contextlib.suppress(Exception):
                    _save_note(study, study_note(entry, dataset, attached))
            raise PublishError(
                f"cannot attach artifacts to {study.study_name!r} in {str(folder)!r}: "
                f"{_first_line(e)}"
            ) from e


def _attach_artifact(
    store: optuna.artifacts.FileSystemArtifactStore,
    path: Path,
    target: FrozenTrial | optuna.Study,
    storage: optuna.storages.BaseStorage,
) -> None:
    """`optuna.artifacts.upload_artifact` in the safe order: the whole file, then its record.

    Optuna records an artifact before it writes the file, so a disk that fills up mid-write
    leaves the dashboard listing half a file. Here a failed write is removed and never recorded;
    the record has Optuna's format, so `get_all_artifact_meta` and the dashboard read it.
    """
    artifact_id = str(uuid.uuid4())
    try:
        with path.open("rb") as handle:
            store.write(artifact_id, handle)
    except BaseException:
        with contextlib.suppress(Exception):
            store.remove(artifact_id)
        raise
    mimetype, encoding = mimetypes.guess_type(path.name)
    meta = json.dumps(
        {
            "artifact_id": artifact_id,
            "filename": path.name,
            "mimetype": mimetype or "application/octet-stream",
            "encoding": encoding,
        }
    )
    key = f"artifacts:{artifact_id}"
    if isinstance(target, optuna.Study):
        storage.set_study_system_attr(target._study_id, key, meta)
    else:
        storage.set_trial_system_attr(target._trial_id, key, meta)


def _save_note(study: optuna.Study, body: str) -> None:
    """`optuna_dashboard.save_note`, imported late: the sweep runs without the dashboard extra."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        raise PublishError(
            "optuna-dashboard is not installed; pip install 'neural-arithmetic-sweep[dashboard]'"
        ) from None
    save_note(study, body)


def extrapolation_plot(model: keras.Model, dataset: Dataset, entry: ModelEntry | None) -> bytes:
    """PNG: the model's predictions against the truth on the extrapolation band.

    Raises:
        ConfigError: matplotlib is not installed (the ``dashboard`` extra).
    """
    from sweep._plots import prediction_png  # matplotlib only when a plot is drawn
    x, y = dataset.x_extrapolation, dataset.y_extrapolation
    predictions = np.asarray(predict(model, x), dtype=np.float64).reshape(-1)
    metrics = evaluate(predictions, y, dataset.operation.integer_valued)
    band = extrapolation_band(dataset.spec.low, dataset.spec.high)
    op = dataset.operation
    version = f", registry version {entry.version} (trial {entry.trial_number})" if entry else ""
    return prediction_png(
        y,
        predictions,
        title=(
            f"{op.name} ({op.description}) on the extrapolation band [{band[0]}, {band[1]})"
            f"{version}"
        ),
        subtitle=(
            f"hit rate {metrics.hit_rate:.3g}, median relative error "
            f"{metrics.median_relative_error:.3g}, MAE {metrics.mae:.4g} ({metrics.count} pairs)"
        ),
        integer_valued=op.integer_valued,
    )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# --- the dashboard server ---------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: the terminal keeps the URL and the stop message."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per request: the dashboard's page fetches several API routes at once."""

    daemon_threads = True  # Ctrl-C does not wait for a browser's keep-alive connections.
    block_on_close = False
    allow_reuse_port = False  # Never share a port another server is listening on.

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # A browser closing a connection early is not worth a traceback.


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class DashboardServer:
    """optuna-dashboard bound to a port, not yet serving; `url` is where to point a browser."""

    def __init__(self, server: WSGIServer, storage: optuna.storages.RDBStorage, url: str) -> None:
        self._server = server
        self._storage = storage
        self.url = url

    def serve_forever(self) -> None:
        """Serve until interrupted (KeyboardInterrupt propagates to the caller)."""
        # optuna-dashboard computes importances per page view; Optuna's "may be inaccurate"
        # warnings would otherwise bury the URL under a screenful per click.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server.serve_forever(poll_interval=0.25)

    def close(self) -> None:
        self._server.server_close()
        self._storage.remove_session()
        self._storage.engine.dispose()


def _dashboard_storage(storage_url: str) -> optuna.storages.RDBStorage:
    url = normalize_storage_url(storage_url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise DashboardError(
            f"no database at {str(path)!r}; run `sweep run` first or pass --storage"
        )
    check_reachable(url)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url))
    except Exception as e:
        raise DashboardError(f"cannot open the studies on {mask_url(url)}: {_first_line(e)}") from e


def open_dashboard(
    storage_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifact_dir: str | os.PathLike[str] | None = None,
) -> DashboardServer:
    """Bind optuna-dashboard to `host`:`port` on the sweep's storage; serving starts later.

    Binding first lets the caller report a busy port as one line and print the URL only once
    it is true. Port 0 picks a free port (see `DashboardServer.url`).

    Raises:
        DashboardError: The port is taken or not allowed, the host is unknown, the SQLite file
            or the artifact folder does not exist, or optuna-dashboard is not installed.
        storage.StorageError: The database cannot be reached.
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardError(
            "optuna-dashboard is not installed; pip install 'neural-arithmetic-sweep[dashboard]'"
        ) from None
    store = None
    if artifact_dir is not None:
        folder = Path(artifact_dir)
        if not folder.is_dir():
            raise DashboardError(f"artifact folder {str(folder)!r} does not exist")
        store = optuna.artifacts.FileSystemArtifactStore(folder)
    storage = _dashboard_storage(storage_url)
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
    try:
        server = make_server(host, port, app, server_class=server_class,
                             handler_class=_QuietHandler)
    except OSError as e:
        storage.engine.dispose()
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(
                f"port {port} on {host} is already in use; pick another with --port"
            ) from None
        reason = e.strerror or str(e) or type(e).__name__
        raise DashboardError(f"cannot listen on {host}:{port}: {reason}") from None
    bound_port = server.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    return DashboardServer(server, storage, f"http://{shown_host}:{bound_port}/dashboard")


def serve_dashboard(
    storage_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifact_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Run optuna-dashboard on the sweep's storage until Ctrl-C (which returns normally).

    Raises:
        DashboardError: As `open_dashboard`.
    """
    server = open_dashboard(storage_url, host, port, artifact_dir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()

