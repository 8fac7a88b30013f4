"""The models `sweep serve` answers with, and the registry poll that swaps in newer bests.

A thread polls the registry (one small query, no model bytes) and loads a newly promoted best
next to the one serving; the swap is one reference assignment, so every request is answered
whole by one version, which it can name. A version that cannot be loaded is refused once (not
retried every poll) while the previous one keeps serving; an unreachable registry is logged
once and changes nothing. Turning bytes into predictors is `model_backends`' job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import (
    ChecksumMismatch,
    Database,
    ModelEntry,
    ModelNotFound,
    ModelRegistry,
    StorageError,
)
from sweep.errors import ConfigError, SweepError, first_line
from sweep.problem.data import DataSpec
from sweep.problem.operations import BUILTIN_OPERATIONS, Operation
from sweep.publishing.lookup import resolve_operation
from sweep.publishing.model_backends import (
    ModelToConvert,
    OnnxConverter,
    Predictor,
    load_tensorflow,
)
from sweep.search.config import CampaignConfig

__all__ = [
    "POLL_SECONDS",
    "ModelStatus",
    "ModelStore",
    "Served",
    "model_metadata",
    "model_status",
    "operation_facts",
]

# The CLI gives this logger its handler and "sweep serve:" prefix: the name is part of the API.
log = logging.getLogger("sweep.serve")

POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Served:
    """One operation's model as it answers: never mutated, replaced whole on promotion."""

    operation: Operation
    entry: ModelEntry
    predictor: Predictor
    backend: str
    seconds_to_load: float


@dataclass
class ModelStatus:
    """An operation's load state, in TF Serving's terms, and the last reason it had no model."""

    state: str = "LOADING"  # TF Serving's states: LOADING, AVAILABLE; "" while no model exists
    error: str = ""
    failed: tuple[int, str] | None = None  # the version that could not be loaded, and its sha


class ModelStore:
    """The models being served, and the registry poll that replaces them with newer bests.

    `operations`: the names to serve, or None for every operation that has a best model (new
    ones are picked up when they are first promoted).
    """

    def __init__(
        self,
        database: Database,
        campaign: str,
        operations: Sequence[str] | None,
        backend: str,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.database = database
        self.campaign = campaign
        self.backend = backend
        self.poll_seconds = poll_seconds
        self._wanted = None if operations is None else tuple(operations)
        self._served: dict[str, Served] = {}
        self._status: dict[str, ModelStatus] = {}
        self._known: dict[str, Operation] = dict(BUILTIN_OPERATIONS)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._converter = OnnxConverter()
        self.ready = threading.Event()
        self._registry_ok = True
        self._registry: ModelRegistry | None = None
        # The SQLite file read (device, inode): a file replaced under the service (a restored
        # backup) is noticed at the next poll and read afresh.
        self._file: tuple[int, int] | None = None
        self._damaged: dict[str, str] = {}
        # Counted for the metrics (`serve_metrics`): versions swapped in, versions refused.
        self.loads: dict[str, int] = {}
        self.failed_loads: dict[str, int] = {}
        campaigns = database.campaigns
        stored = campaigns.load(campaign)
        if stored:
            # Every swept operation as the campaign resolves it (a built-in over real ranges
            # is not integer-valued; a table has no formula), not only its expressions.
            for operation in CampaignConfig.from_dict(stored).resolved_operations():
                self._known[operation.name] = operation
        for name in self._wanted or ():
            self._known[name] = resolve_operation(campaigns, campaign, name)

    # --- reading (request threads) -------------------------------------------------------------

    def served(self, name: str) -> Served | None:
        return self._served.get(name)

    def operation(self, name: str) -> Operation | None:
        """The operation as this campaign resolves it (served or not yet), if served here."""
        return self._known.get(name) if self.is_known(name) else None

    def is_known(self, name: str) -> bool:
        return name in self._known and (self._wanted is None or name in self._wanted)

    def status(self, name: str) -> ModelStatus:
        return self._status.get(name) or ModelStatus(state="", error="no model promoted yet")

    def versions(self) -> dict[str, int]:
        return {name: s.entry.version for name, s in sorted(self._served.items())}

    # --- the poll (one thread) -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sweep-serve-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._converter.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.database.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as e:  # the poll must never die: the service keeps serving
                log.warning("registry poll failed: %s", first_line(e))
            self.ready.set()
            self._stop.wait(self.poll_seconds)

    def _open_registry(self) -> ModelRegistry:
        self._notice_a_replaced_file()
        if self._registry is None:
            self._registry = self.database.registry
            self._file = _file_id(self.database.sqlite_path)
        return self._registry

    def _notice_a_replaced_file(self) -> None:
        """A SQLite file replaced (or removed) since it was opened: close the old one, whose
        engine would read the deleted file forever, and say so once."""
        if self._registry is None or self._file is None:
            return
        path = self.database.sqlite_path
        now = _file_id(path)
        if now == self._file:
            return
        what = "removed" if now is None else "replaced"
        log.warning("the database file %s was %s; reading it afresh", path, what)
        self.database.close()
        self._registry = None
        self._file = None

    def refresh(self) -> None:
        """One poll: load every wanted operation whose best version is not the one served."""
        fetched: list[tuple[ModelEntry, bytes]] = []
        try:
            registry = self._open_registry()
            entries, damaged = registry.best_each(self.campaign)
            bests = {e.operation: e for e in entries}
            self._note_damaged(damaged)
            for name in bests:
                if name not in self._known and self._wanted is None:
                    with contextlib.suppress(ConfigError):  # promoted before its campaign?
                        self._known[name] = resolve_operation(
                            self.database.campaigns, self.campaign, name
                        )
            for entry in [e for name, e in bests.items() if self._is_due(name, e)]:
                try:
                    fetched.append(
                        (entry, registry.fetch(entry.campaign, entry.operation, entry.version)[1])
                    )
                except (ChecksumMismatch, ModelNotFound) as e:
                    # This version is damaged (or went away): keep serving the one we have.
                    self._refuse(entry, first_line(e))
        except (StorageError, SweepError) as e:
            if self._registry is not None:
                # Opened again at the next poll: a new engine, a new connection.
                self.database.close()
                self._registry = None
            if self._registry_ok:
                versions = ", ".join(f"{k} v{v}" for k, v in self.versions().items()) or "none"
                log.warning(
                    "cannot read the registry (%s); still serving: %s", first_line(e), versions
                )
            self._registry_ok = False
            for name in self._wanted or ():
                self._status.setdefault(
                    name, ModelStatus(state="", error="registry unreachable")
                )
            return
        if not self._registry_ok:
            log.info("the registry answers again")
        self._registry_ok = True
        for name in self._wanted or ():
            if name not in bests and name not in self._served and name not in damaged:
                self._status[name] = ModelStatus(state="", error="no model promoted yet")
        if fetched:
            self._load(fetched)

    def _note_damaged(self, damaged: dict[str, str]) -> None:
        """Operations whose registry row cannot be read: each keeps what it serves, the others
        are untouched; logged once per distinct damage."""
        for name, reason in damaged.items():
            if self._wanted is not None and name not in self._wanted:
                continue
            if self._damaged.get(name) != reason:
                still = self._served.get(name)
                keeps = f"; still serving version {still.entry.version}" if still else ""
                log.warning("%s: %s%s", name, first_line(RuntimeError(reason)), keeps)
            state = "AVAILABLE" if name in self._served else ""
            self._status[name] = ModelStatus(state=state, error=first_line(RuntimeError(reason)))
        for name in set(self._damaged) - set(damaged):
            log.info("%s: the registry row reads again", name)
        self._damaged = dict(damaged)

    def _refuse(self, entry: ModelEntry, reason: str) -> None:
        """Record that `entry` cannot be served (not retried until a new version comes)."""
        name = entry.operation
        label = f"{name} version {entry.version}"
        self.failed_loads[name] = self.failed_loads.get(name, 0) + 1
        self._status[name] = ModelStatus(
            state="AVAILABLE" if name in self._served else "",
            error=f"{label} cannot be served: {reason}",
            failed=(entry.version, entry.sha256),
        )
        still = self._served.get(name)
        keeps = f"; still serving version {still.entry.version}" if still else ""
        log.warning("%s cannot be served: %s%s", label, reason, keeps)

    def _is_due(self, name: str, entry: ModelEntry) -> bool:
        if self._wanted is not None and name not in self._wanted:
            return False
        if name not in self._known:
            return False
        current = self._served.get(name)
        if current is not None and current.entry.version == entry.version:
            return False
        status = self._status.get(name)
        # A version that failed to load is not retried every poll; a new version is.
        return not (status and status.failed == (entry.version, entry.sha256))

    def _load(self, fetched: list[tuple[ModelEntry, bytes]]) -> None:
        for entry, _ in fetched:
            if entry.operation not in self._served:
                self._status[entry.operation] = ModelStatus(state="LOADING")
        started = time.monotonic()
        results: list[Predictor | str]
        if self.backend == "onnxruntime":
            models = [ModelToConvert(e, data, self._known[e.operation]) for e, data in fetched]
            results = self._converter.convert(models, self._data_spec())
        else:
            results = [load_tensorflow(entry, data) for entry, data in fetched]
        seconds = time.monotonic() - started
        for (entry, _), result in zip(fetched, results, strict=True):
            name = entry.operation
            label = f"{name} version {entry.version}"
            if isinstance(result, str):
                self._refuse(entry, result)
                continue
            served = Served(self._known[name], entry, result, self.backend, seconds)
            with self._lock:
                self._served = {**self._served, name: served}
            self._status[name] = ModelStatus(state="AVAILABLE")
            self.loads[name] = self.loads.get(name, 0) + 1
            log.info("serving %s (%s, loaded in %.1f s)", label, self.backend, seconds)

    def _data_spec(self) -> DataSpec:
        """The campaign's data settings: the probe inputs the conversion checks answers on."""
        self._open_registry()
        stored = self.database.campaigns.load(self.campaign)
        return CampaignConfig.from_dict(stored).data if stored else DataSpec()


def model_status(store: ModelStore, name: str) -> dict[str, Any]:
    """``GET /v1/models/OP``: TF Serving's model status, plus the operation's inputs, the
    version served, its checksum, metrics and architecture."""
    served = store.served(name)
    status = store.status(name)
    body: dict[str, Any] = {"operation": name, "campaign": store.campaign}
    operation = served.operation if served is not None else store.operation(name)
    if operation is not None:
        body.update(operation_facts(operation))
    if served is None:
        body["model_version_status"] = [
            {
                "version": "0",
                "state": status.state or "START",
                "status": {
                    "error_code": "UNAVAILABLE" if status.state == "LOADING" else "NOT_FOUND",
                    "error_message": status.error or "loading",
                },
            }
        ]
        return body
    entry = served.entry
    body["model_version_status"] = [
        {
            "version": str(entry.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": status.error},
        }
    ]
    body.update(
        model_version=entry.version,
        sha256=entry.sha256,
        trial=entry.trial_number,
        created_at=entry.created_at.isoformat(),
        architecture=str(entry.params.get("architecture", "")),
        params=entry.params,
        metrics=entry.metrics,
        backend=served.backend,
    )
    return body


def operation_facts(op: Operation) -> dict[str, Any]:
    """What a client needs to ask: the inputs in row order, their ranges, the rounding rule."""
    return {
        "inputs": list(op.inputs),
        "arity": op.arity,
        "kind": op.kind,
        "integer_valued": op.integer_valued,
        "input_ranges": [
            {"name": r.name, "low": r.low, "high": r.high, "kind": r.kind} for r in op.ranges
        ],
    }


def model_metadata(served: Served) -> dict[str, Any]:
    """TF Serving's ``GET /v1/models/OP/metadata``: the signature of the exported model (one
    float64 tensor ``operands`` (n, arity) in, ``result`` (n,) out), plus the input names."""
    from sweep.nets.portable import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

    op = served.operation

    def tensor(name: str, *sizes: int) -> dict[str, Any]:
        dims = [{"size": str(size), "name": ""} for size in sizes]
        return {"dtype": "DT_DOUBLE", "tensor_shape": {"dim": dims, "unknown_rank": False},
                "name": name}

    signature = {
        "inputs": {INPUT_NAME: tensor(INPUT_NAME, -1, op.arity)},
        "outputs": {OUTPUT_NAME: tensor(OUTPUT_NAME, -1)},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": op.name, "signature_name": "", "version": str(served.entry.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE_NAME: signature}}},
        **operation_facts(op),
    }


def _file_id(path: Path | None) -> tuple[int, int] | None:
    """(device, inode) of a SQLite file; None for a server, or a file that is not there."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
