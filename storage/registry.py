"""Model registry: versioned models per (campaign, operation) and the current best of each.

Promotion is the one write that many workers race on. It is serialised per key by locking that
key's ``sweep_best`` row (``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB; SQLite takes its
database write lock with ``BEGIN IMMEDIATE``), so the compare and the write see the same best.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from storage._boundary import connect, retrying, translated
from storage.engine import SQLITE_BEGIN_IMMEDIATE, create_engine, require_sqlite_directory
from storage.errors import (
    ChecksumMismatch,
    DamagedRegistry,
    InvalidRegistryValue,
    ModelNotFound,
    PromotionRefused,
    StorageInternalError,
)
from storage.models import best_table, ensure_schema, model_versions_table
from storage.rows import (
    BEST_KEY_COLUMNS,
    ENTRY_COLUMNS,
    ModelCandidate,
    ModelEntry,
    best_key,
    dump_json,
    entry_from_row,
    reading,
    validate_candidate,
)
from storage.urls import StorageURL, as_storage_url

__all__ = ["ModelCandidate", "ModelEntry", "ModelRegistry", "PromotionGuard"]

# Runs inside the promotion's transaction, after the key's lock is taken; returns why the
# promotion must not happen (e.g. the trial is no longer running), or None to go ahead.
PromotionGuard = Callable[[Connection], str | None]
# Versions are stored as 32-bit integers; anything beyond cannot exist.
_MAX_VERSION = 2**31 - 1

_mv = model_versions_table
_best = best_table


class ModelRegistry:
    """Versioned models and the current best per (campaign, operation), in one SQL database.

    Creating a registry connects and brings our tables to the current schema version.
    Use it as a context manager, or call `close`, to release its connections.
    """

    def __init__(self, url: StorageURL | str, *, engine: Engine | None = None) -> None:
        """Open the registry on a database (usually through `storage.Database.registry`).

        Args:
            url: The storage URL, parsed (a string is parsed here, for use outside the sweep).
            engine: The engine to share (`storage.Database`'s: one small pool serves the
                whole process); the caller keeps it and disposes it. Left out, the registry
                makes its own and `close` disposes it.

        Raises:
            InvalidStorageURL: The URL is not a supported storage URL.
            StorageUnavailable: The database cannot be reached.
            IncompatibleSchema: The database was written by newer code.
        """
        self._url = as_storage_url(url)
        require_sqlite_directory(self._url)
        self._owns_engine = engine is None
        self._engine = create_engine(self._url) if engine is None else engine
        self._dialect = self._engine.dialect.name
        if self._dialect == "sqlite":
            self._writer: Engine = self._engine.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        else:
            # After waiting for a row lock the next statement must see what the previous holder
            # committed; MySQL's default REPEATABLE READ could answer from an older snapshot.
            self._writer = self._engine.execution_options(isolation_level="READ COMMITTED")
        try:
            ensure_schema(self._engine)
        except BaseException:
            self.close()
            raise

    @property
    def engine(self) -> Engine:
        """The engine the registry works through (shared or its own)."""
        return self._engine

    @property
    def url(self) -> str:
        """The storage URL with its password masked, for display."""
        return self._url.masked

    def __repr__(self) -> str:
        return f"ModelRegistry({self.url!r})"

    def close(self) -> None:
        """Close all pooled connections of its own engine; it must not be used afterwards."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- promotion ----------------------------------------------------------------------------

    def promote_if_better(
        self, candidate: ModelCandidate, guard: PromotionGuard | None = None
    ) -> ModelEntry | None:
        """Store the candidate as a new version and make it the best, if it strictly beats the best.

        Atomic across processes and hosts: the comparison and the write happen under a lock on
        the key's ``sweep_best`` row, so concurrent workers never leave a worse model as best,
        never lose or duplicate a version, and never produce two current bests.

        `guard` runs in the same transaction, under the same lock: a promotion it refuses
        writes nothing, so no other writer can change what it checked before the commit.

        Returns:
            The new entry, or None when the candidate is not strictly better than the current
            best or its objective is NaN or infinite (never promoted).

        Raises:
            PromotionRefused: `guard` refused (its reason is the message).
            InvalidRegistryValue: A field is too long, of the wrong type, or not JSON.
            StorageUnavailable: The database cannot be reached.
            StorageInternalError: Any other database error.
        """
        validate_candidate(candidate)
        objective = float(candidate.objective_value)
        if not math.isfinite(objective):
            return None
        values: dict[str, Any] = {
            "campaign": candidate.campaign,
            "operation": candidate.operation,
            "study_name": candidate.study_name,
            "trial_number": candidate.trial_number,
            "objective_value": objective,
            "metrics": dump_json(candidate.metrics, "metrics"),
            "params": dump_json(candidate.params, "params"),
            "model_bytes": bytes(candidate.model_bytes),
            "sha256": hashlib.sha256(candidate.model_bytes).hexdigest(),
            "size_bytes": len(candidate.model_bytes),
            "keras_version": candidate.keras_version,
            "tensorflow_version": candidate.tensorflow_version,
        }
        key = f"{candidate.campaign}/{candidate.operation}"
        with translated(self._engine, f"promoting a model for {key}"):
            return retrying(lambda: self._promote_once(values, guard))

    def _promote_once(
        self, values: dict[str, Any], guard: PromotionGuard | None
    ) -> ModelEntry | None:
        campaign, operation = values["campaign"], values["operation"]
        self._ensure_best_row(campaign, operation)
        with connect(self._writer) as connection, connection.begin():
            lock = select(_best.c.objective_value).where(best_key(campaign, operation))
            if self._dialect != "sqlite":  # SQLite holds the database write lock already.
                lock = lock.with_for_update()
            row = connection.execute(lock).first()
            if row is None:
                raise StorageInternalError(
                    f"the sweep_best row for {campaign}/{operation} vanished during promotion."
                )
            current = row.objective_value
            if current is not None and not values["objective_value"] < current:
                return None
            if guard is not None:
                refusal = guard(connection)
                if refusal is not None:
                    raise PromotionRefused(refusal)
            latest = connection.execute(
                select(func.max(_mv.c.version)).where(
                    _mv.c.campaign == campaign, _mv.c.operation == operation
                )
            ).scalar()
            version = (latest or 0) + 1
            created_at = datetime.now(UTC)
            inserted = connection.execute(
                _mv.insert().values(**values, version=version, created_at=created_at)
            )
            primary_key = inserted.inserted_primary_key
            if primary_key is None:  # pragma: no cover - every supported driver reports it
                raise StorageInternalError("the database did not report the new version's id.")
            new_id = primary_key[0]
            connection.execute(
                _best.update()
                .where(best_key(campaign, operation))
                .values(version_id=new_id, objective_value=values["objective_value"])
            )
        return ModelEntry(
            campaign=campaign,
            operation=operation,
            version=version,
            study_name=values["study_name"],
            trial_number=values["trial_number"],
            objective_value=values["objective_value"],
            metrics=json.loads(values["metrics"]),
            params=json.loads(values["params"]),
            sha256=values["sha256"],
            size_bytes=values["size_bytes"],
            keras_version=values["keras_version"],
            tensorflow_version=values["tensorflow_version"],
            created_at=created_at,
            is_best=True,
        )

    def _ensure_best_row(self, campaign: str, operation: str) -> None:
        """Make sure the key has a row to lock; inserted in its own short transaction."""
        with connect(self._engine) as connection:
            exists = connection.execute(
                select(_best.c.campaign).where(best_key(campaign, operation))
            ).first()
        if exists is not None:
            return
        with connect(self._writer) as connection:
            try:
                with connection.begin():
                    connection.execute(
                        _best.insert().values(
                            campaign=campaign,
                            operation=operation,
                            version_id=None,
                            objective_value=None,
                        )
                    )
            except IntegrityError:
                pass  # A concurrent worker inserted it first, which is all we needed.

    # --- reads (no locks) ---------------------------------------------------------------------

    def best(self, campaign: str, operation: str) -> ModelEntry | None:
        """The current best of one operation, or None when nothing was promoted yet."""
        with (
            reading(f"reading the best model of {campaign}/{operation}"),
            translated(self._engine, f"reading the best model of {campaign}/{operation}"),
            connect(self._engine) as connection,
        ):
            row = connection.execute(
                select(*ENTRY_COLUMNS, *BEST_KEY_COLUMNS)
                .join(_best, _best.c.version_id == _mv.c.id)
                .where(best_key(campaign, operation))
            ).first()
        return None if row is None else entry_from_row(row, is_best=True)

    def best_all(self, campaign: str | None = None) -> list[ModelEntry]:
        """The current best of every operation (of one campaign, or of all), by name.

        Raises:
            DamagedRegistry: a row cannot be read (`best_each` sets such rows apart instead).
        """
        return [entry_from_row(row, is_best=True) for row in self._best_rows(campaign)]

    def best_each(self, campaign: str) -> tuple[list[ModelEntry], dict[str, str]]:
        """The current best of every operation of `campaign`, and apart, per operation, why
        its row cannot be read: one damaged row costs its own operation only (`sweep serve`
        keeps serving the others)."""
        entries: list[ModelEntry] = []
        damaged: dict[str, str] = {}
        for row in self._best_rows(campaign):
            try:
                entries.append(entry_from_row(row, is_best=True))
            except DamagedRegistry as e:
                damaged[str(row.best_operation)] = str(e)
        return entries, damaged

    def _best_rows(self, campaign: str | None) -> list[Row[*tuple[Any, ...]]]:
        query = select(*ENTRY_COLUMNS, *BEST_KEY_COLUMNS).join(
            _best, _best.c.version_id == _mv.c.id
        )
        if campaign is not None:
            query = query.where(_best.c.campaign == campaign)
        query = query.order_by(_mv.c.campaign, _mv.c.operation)
        with (
            reading("reading the best models"),
            translated(self._engine, "reading the best models"),
            connect(self._engine) as c,
        ):
            return list(c.execute(query).all())

    def history(self, campaign: str, operation: str | None = None) -> list[ModelEntry]:
        """Every stored version of a campaign (or of one operation), by operation and version."""
        is_best = _best.c.version_id.is_not(None).label("is_best")
        query = (
            select(*ENTRY_COLUMNS, is_best)
            .outerjoin(_best, _best.c.version_id == _mv.c.id)
            .where(_mv.c.campaign == campaign)
        )
        if operation is not None:
            query = query.where(_mv.c.operation == operation)
        query = query.order_by(_mv.c.operation, _mv.c.version)
        with (
            reading(f"reading the history of {campaign}"),
            translated(self._engine, f"reading the history of {campaign}"),
            connect(self._engine) as connection,
        ):
            rows = connection.execute(query).all()
        return [entry_from_row(row, is_best=bool(row.is_best)) for row in rows]

    def fetch(
        self, campaign: str, operation: str, version: int | None = None
    ) -> tuple[ModelEntry, bytes]:
        """A model's entry and bytes: the current best, or the given version.

        Raises:
            ModelNotFound: No such model; the message lists the versions that exist.
            ChecksumMismatch: The stored bytes do not hash to the recorded sha256.
        """
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidRegistryValue(
                f"version must be an int or None, but got {version!r} ({type(version).__name__})."
            )
        if version is not None and not 1 <= version <= _MAX_VERSION:
            with connect(self._engine) as connection:
                existing = connection.execute(
                    select(_mv.c.version)
                    .where(_mv.c.campaign == campaign, _mv.c.operation == operation)
                    .order_by(_mv.c.version)
                ).scalars()
                raise ModelNotFound(
                    _not_found_message(campaign, operation, _shown_version(version), existing)
                )
        is_best = _best.c.version_id.is_not(None).label("is_best")
        query = select(*ENTRY_COLUMNS, is_best, _mv.c.model_bytes)
        if version is None:
            query = query.add_columns(*BEST_KEY_COLUMNS).join(
                _best, _best.c.version_id == _mv.c.id
            ).where(best_key(campaign, operation))
        else:
            query = query.outerjoin(_best, _best.c.version_id == _mv.c.id).where(
                _mv.c.campaign == campaign, _mv.c.operation == operation, _mv.c.version == version
            )
        with (
            reading(f"fetching a model of {campaign}/{operation}"),
            translated(self._engine, f"fetching a model of {campaign}/{operation}"),
            connect(self._engine) as connection,
        ):
            row = connection.execute(query).first()
            if row is None:
                existing = connection.execute(
                    select(_mv.c.version)
                    .where(_mv.c.campaign == campaign, _mv.c.operation == operation)
                    .order_by(_mv.c.version)
                ).scalars()
                raise ModelNotFound(_not_found_message(campaign, operation, version, existing))
        entry = entry_from_row(row, is_best=bool(row.is_best))
        if (entry.campaign, entry.operation) != (campaign, operation):
            raise DamagedRegistry(  # the best row of another key, or a hand-edited row
                f"the registry's entry for {campaign}/{operation} holds a model of "
                f"{entry.campaign}/{entry.operation} (version {entry.version}); refusing it"
            )
        data = bytes(row.model_bytes)
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            raise ChecksumMismatch(
                f"model {campaign}/{operation} version {entry.version} is corrupt: its "
                f"{len(data)} bytes hash to sha256 {actual}, but {entry.sha256} was recorded."
            )
        return entry, data


def _shown_version(version: int) -> int | str:
    text = str(version)
    return version if len(text) <= 20 else text[:17] + "..."


def _not_found_message(
    campaign: str, operation: str, version: int | str | None, existing: Iterable[Any]
) -> str:
    versions = [int(v) for v in existing]
    wanted = "best model" if version is None else f"version {version}"
    where = f"campaign {campaign!r} operation {operation!r}"
    if not versions:
        return f"no model for {where}: nothing was promoted yet."
    return f"no {wanted} for {where}; versions that exist: {_ranges(versions)}."


def _ranges(numbers: Sequence[int]) -> str:
    """Compress sorted integers: [1, 2, 3, 5] -> '1-3, 5'."""
    parts: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)
