"""Model registry: versioned models per (campaign, operation) and the current best of each.

Promotion is the one write that many workers race on. It is serialised per key by locking that
key's ``sweep_best`` row (``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB; SQLite takes its
database write lock with ``BEGIN IMMEDIATE``), so the compare and the write see the same best.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from storage._boundary import connect, masked, translated
from storage.engine import SQLITE_BEGIN_IMMEDIATE, create_engine, require_sqlite_directory
from storage.errors import (
    CampaignConflict,
    ChecksumMismatch,
    DamagedRegistry,
    InvalidRegistryValue,
    ModelNotFound,
    PromotionRefused,
    StorageInternalError,
)
from storage.locks import transaction_lock
from storage.models import best_table, campaigns_table, ensure_schema, model_versions_table
from storage.urls import normalize_storage_url

__all__ = ["CampaignMerge", "ModelCandidate", "ModelEntry", "ModelRegistry", "PromotionGuard"]

_T = TypeVar("_T")

# Runs inside the promotion's transaction, after the key's lock is taken; returns why the
# promotion must not happen (e.g. the trial is no longer running), or None to go ahead.
PromotionGuard = Callable[[Connection], str | None]
# Given the stored config (None for a new campaign), returns the config to store (None: keep
# the stored one); raises to refuse. Runs under the campaigns lock, in the same transaction.
CampaignMerge = Callable[[dict[str, Any] | None], dict[str, Any] | None]
# Versions are stored as 32-bit integers; anything beyond cannot exist.
_MAX_VERSION = 2**31 - 1
_CAMPAIGNS_LOCK = "sweep-campaigns"

_MAX_ATTEMPTS = 6
# PostgreSQL SQLSTATEs and MySQL error numbers that mean "run the transaction again".
_PG_RETRYABLE = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock timeout
_MYSQL_RETRYABLE = frozenset({1205, 1213})  # lock wait timeout, deadlock
_NAME_LIMITS = {
    "campaign": 64,
    "operation": 64,
    "study_name": 255,
    "keras_version": 32,
    "tensorflow_version": 32,
}

_mv = model_versions_table
_best = best_table


@dataclass(frozen=True)
class ModelCandidate:
    """A trained model offered for promotion; ``objective_value`` is lower-is-better."""

    campaign: str
    operation: str
    study_name: str
    trial_number: int
    objective_value: float
    metrics: dict[str, float]
    params: dict[str, Any]
    model_bytes: bytes = field(repr=False)
    keras_version: str
    tensorflow_version: str


@dataclass(frozen=True)
class ModelEntry:
    """A stored model version, without its bytes (use `ModelRegistry.fetch` for those)."""

    campaign: str
    operation: str
    version: int
    study_name: str
    trial_number: int
    objective_value: float
    metrics: dict[str, float]
    params: dict[str, Any]
    sha256: str
    size_bytes: int
    keras_version: str
    tensorflow_version: str
    created_at: datetime
    is_best: bool


_ENTRY_COLUMNS = (
    _mv.c.campaign,
    _mv.c.operation,
    _mv.c.version,
    _mv.c.study_name,
    _mv.c.trial_number,
    _mv.c.objective_value,
    _mv.c.metrics,
    _mv.c.params,
    _mv.c.sha256,
    _mv.c.size_bytes,
    _mv.c.keras_version,
    _mv.c.tensorflow_version,
    _mv.c.created_at,
)


class ModelRegistry:
    """Versioned models and the current best per (campaign, operation), in one SQL database.

    Creating a registry connects and brings our tables to the current schema version.
    Use it as a context manager, or call `close`, to release its connections.
    """

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        """Open the registry at a storage URL.

        Args:
            url: The storage URL.
            engine: A server engine to share (a worker passes its Optuna storage's, so one
                small pool serves the whole process); the caller keeps it and disposes it.
                Left out, the registry makes its own and `close` disposes it.

        Raises:
            InvalidStorageURL: The URL is not a supported storage URL.
            StorageUnavailable: The database cannot be reached.
            IncompatibleSchema: The database was written by newer code.
        """
        normalized = normalize_storage_url(url)
        require_sqlite_directory(normalized)
        self._owns_engine = engine is None
        self._engine = create_engine(normalized) if engine is None else engine
        self._dialect = self._engine.dialect.name
        if engine is not None and self._dialect == "sqlite":
            # Our SQLite engine begins transactions itself (BEGIN IMMEDIATE for writers); an
            # engine without those hooks would autocommit. SQLite holds no server connections.
            raise ValueError("a shared engine is for server databases, not SQLite")
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
        return masked(self._engine)

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
        _validate_candidate(candidate)
        objective = float(candidate.objective_value)
        if not math.isfinite(objective):
            return None
        values: dict[str, Any] = {
            "campaign": candidate.campaign,
            "operation": candidate.operation,
            "study_name": candidate.study_name,
            "trial_number": candidate.trial_number,
            "objective_value": objective,
            "metrics": _dump_json(candidate.metrics, "metrics"),
            "params": _dump_json(candidate.params, "params"),
            "model_bytes": bytes(candidate.model_bytes),
            "sha256": hashlib.sha256(candidate.model_bytes).hexdigest(),
            "size_bytes": len(candidate.model_bytes),
            "keras_version": candidate.keras_version,
            "tensorflow_version": candidate.tensorflow_version,
        }
        key = f"{candidate.campaign}/{candidate.operation}"
        with translated(self._engine, f"promoting a model for {key}"):
            return self._retrying(lambda: self._promote_once(values, guard))

    def _promote_once(
        self, values: dict[str, Any], guard: PromotionGuard | None
    ) -> ModelEntry | None:
        campaign, operation = values["campaign"], values["operation"]
        self._ensure_best_row(campaign, operation)
        with connect(self._writer) as connection, connection.begin():
            lock = select(_best.c.objective_value).where(_best_key(campaign, operation))
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
                .where(_best_key(campaign, operation))
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
                select(_best.c.campaign).where(_best_key(campaign, operation))
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

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """Run a transaction, again after a deadlock or serialization failure (with backoff)."""
        for number in range(1, _MAX_ATTEMPTS + 1):
            try:
                return attempt()
            except DBAPIError as e:
                if number == _MAX_ATTEMPTS or not _is_retryable(e):
                    raise
                time.sleep(random.uniform(0.01, 0.05) * 2**number)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- reads (no locks) ---------------------------------------------------------------------

    def best(self, campaign: str, operation: str) -> ModelEntry | None:
        """The current best of one operation, or None when nothing was promoted yet."""
        with (
            _reading(f"reading the best model of {campaign}/{operation}"),
            translated(self._engine, f"reading the best model of {campaign}/{operation}"),
            connect(self._engine) as connection,
        ):
            row = connection.execute(
                select(*_ENTRY_COLUMNS, *_BEST_KEY_COLUMNS)
                .join(_best, _best.c.version_id == _mv.c.id)
                .where(_best_key(campaign, operation))
            ).first()
        return None if row is None else _entry(row, is_best=True)

    def best_all(self, campaign: str | None = None) -> list[ModelEntry]:
        """The current best of every operation (of one campaign, or of all), by name."""
        query = select(*_ENTRY_COLUMNS, *_BEST_KEY_COLUMNS).join(
            _best, _best.c.version_id == _mv.c.id
        )
        if campaign is not None:
            query = query.where(_best.c.campaign == campaign)
        query = query.order_by(_mv.c.campaign, _mv.c.operation)
        with (
            _reading("reading the best models"),
            translated(self._engine, "reading the best models"),
            connect(self._engine) as c,
        ):
            rows = c.execute(query).all()
        return [_entry(row, is_best=True) for row in rows]

    def history(self, campaign: str, operation: str | None = None) -> list[ModelEntry]:
        """Every stored version of a campaign (or of one operation), by operation and version."""
        is_best = _best.c.version_id.is_not(None).label("is_best")
        query = (
            select(*_ENTRY_COLUMNS, is_best)
            .outerjoin(_best, _best.c.version_id == _mv.c.id)
            .where(_mv.c.campaign == campaign)
        )
        if operation is not None:
            query = query.where(_mv.c.operation == operation)
        query = query.order_by(_mv.c.operation, _mv.c.version)
        with (
            _reading(f"reading the history of {campaign}"),
            translated(self._engine, f"reading the history of {campaign}"),
            connect(self._engine) as connection,
        ):
            rows = connection.execute(query).all()
        return [_entry(row, is_best=bool(row.is_best)) for row in rows]

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
        query = select(*_ENTRY_COLUMNS, is_best, _mv.c.model_bytes)
        if version is None:
            query = query.add_columns(*_BEST_KEY_COLUMNS).join(
                _best, _best.c.version_id == _mv.c.id
            ).where(_best_key(campaign, operation))
        else:
            query = query.outerjoin(_best, _best.c.version_id == _mv.c.id).where(
                _mv.c.campaign == campaign, _mv.c.operation == operation, _mv.c.version == version
            )
        with (
            _reading(f"fetching a model of {campaign}/{operation}"),
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
        entry = _entry(row, is_best=bool(row.is_best))
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

    # --- campaigns ----------------------------------------------------------------------------

    def save_campaign(self, name: str, config: dict[str, Any]) -> bool:
        """Record a campaign's configuration unless one of that name exists; race-safe.

        Returns:
            True if this call created it, False if it already existed (left unchanged).
        """
        _check_text("campaign", name)
        if not isinstance(config, dict):
            raise InvalidRegistryValue(
                f"campaign config must be a dict, but got {type(config).__name__}."
            )
        config_json = _dump_json(config, "campaign config")
        with (
            translated(self._engine, f"saving campaign {name!r}"),
            connect(self._writer) as connection,
        ):
            try:
                with connection.begin():
                    exists = connection.execute(
                        select(campaigns_table.c.name).where(campaigns_table.c.name == name)
                    ).first()
                    if exists is not None:
                        return False
                    connection.execute(
                        campaigns_table.insert().values(
                            name=name, config=config_json, created_at=datetime.now(UTC)
                        )
                    )
            except IntegrityError:
                return False  # Created concurrently between our check and our insert.
        return True

    def update_campaign(self, name: str, config: dict[str, Any]) -> None:
        """Replace an existing campaign's stored configuration (its run settings changed).

        Raises:
            ModelNotFound: No campaign has that name.
        """
        _check_text("campaign", name)
        config_json = _dump_json(config, "campaign config")
        with (
            translated(self._engine, f"updating campaign {name!r}"),
            connect(self._writer) as connection,
            connection.begin(),
        ):
            updated = connection.execute(
                campaigns_table.update()
                .where(campaigns_table.c.name == name)
                .values(config=config_json)
            ).rowcount
        if not updated:
            raise ModelNotFound(f"no campaign named {name!r} in {self.url}")

    def load_campaign(self, name: str) -> dict[str, Any] | None:
        """A campaign's saved configuration, or None if no campaign has that name."""
        with (
            translated(self._engine, f"loading campaign {name!r}"),
            connect(self._engine) as connection,
        ):
            config = connection.execute(
                select(campaigns_table.c.config).where(campaigns_table.c.name == name)
            ).scalar()
        if config is None:
            return None
        try:
            loaded = json.loads(config)
        except (TypeError, ValueError):
            loaded = None
        if not isinstance(loaded, dict):
            raise DamagedRegistry(
                f"campaign {name!r} in {self.url} has a stored config that is not a JSON "
                "object; the row was damaged or edited by hand"
            )
        return loaded

    def register_campaign(self, name: str, merge: CampaignMerge) -> dict[str, Any]:
        """Create or update a campaign in one step: read, decide (`merge`), write, commit.

        Serialised across processes (the campaigns lock, then the row), so two runs starting
        together on a fresh database cannot both create, or one overwrite what the other
        checked. A name that differs from a stored one only by case is refused: MySQL and
        MariaDB compare Optuna's study names case-insensitively, so the two would share studies.

        Returns:
            The configuration stored when the call returns.

        Raises:
            CampaignConflict: another campaign's name differs from `name` only by case.
            Whatever `merge` raises (nothing is written then).
        """
        _check_text("campaign", name)
        with translated(self._engine, f"saving campaign {name!r}"):
            return self._retrying(lambda: self._register_once(name, merge))

    def _register_once(self, name: str, merge: CampaignMerge) -> dict[str, Any]:
        with connect(self._writer) as connection, connection.begin():
            # SQLite: BEGIN IMMEDIATE already admits one writer at a time.
            lock = (
                transaction_lock(connection, _CAMPAIGNS_LOCK)
                if self._dialect != "sqlite"
                else contextlib.nullcontext()
            )
            with lock:
                names = connection.execute(
                    select(campaigns_table.c.name).where(
                        func.lower(campaigns_table.c.name) == name.lower()
                    )
                ).scalars().all()
                clash = [str(n) for n in names if n != name]
                if clash:
                    raise CampaignConflict(
                        f"campaign {name!r} differs from the existing campaign {clash[0]!r} "
                        "only by case; MySQL and MariaDB compare study names without case, so "
                        "they would share studies: pick another name"
                    )
                query = select(campaigns_table.c.config).where(campaigns_table.c.name == name)
                if self._dialect != "sqlite":
                    query = query.with_for_update()
                stored_json = connection.execute(query).scalar()
                stored = None if stored_json is None else self._parse_campaign(name, stored_json)
                wanted = merge(stored)
                if stored is None:
                    config = wanted if wanted is not None else {}
                    connection.execute(
                        campaigns_table.insert().values(
                            name=name,
                            config=_dump_json(config, "campaign config"),
                            created_at=datetime.now(UTC),
                        )
                    )
                    return config
                if wanted is not None and wanted != stored:
                    connection.execute(
                        campaigns_table.update()
                        .where(campaigns_table.c.name == name)
                        .values(config=_dump_json(wanted, "campaign config"))
                    )
                    return wanted
                return stored

    def _parse_campaign(self, name: str, text: str) -> dict[str, Any]:
        try:
            loaded = json.loads(text)
        except (TypeError, ValueError):
            loaded = None
        if not isinstance(loaded, dict):
            raise DamagedRegistry(
                f"campaign {name!r} in {self.url} has a stored config that is not a JSON "
                "object; the row was damaged or edited by hand"
            )
        return loaded

    def list_campaigns(self) -> list[str]:
        """Names of all saved campaigns, sorted."""
        with translated(self._engine, "listing campaigns"), connect(self._engine) as connection:
            names = connection.execute(
                select(campaigns_table.c.name).order_by(campaigns_table.c.name)
            ).scalars()
            return sorted(str(name) for name in names)


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Values the driver cannot even convert (a date column holding 'yesterday') are damage
    in the row, not a bug: one `DamagedRegistry` line naming what was being read."""
    try:
        yield
    except (ValueError, TypeError, OverflowError) as e:
        if isinstance(e, InvalidRegistryValue):
            raise
        raise DamagedRegistry(
            f"a registry row cannot be read while {what} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:120]}); the row was damaged or edited by hand"
        ) from None


def _best_key(campaign: str, operation: str) -> ColumnElement[bool]:
    return (_best.c.campaign == campaign) & (_best.c.operation == operation)


_BEST_KEY_COLUMNS = (
    _best.c.campaign.label("best_campaign"),
    _best.c.operation.label("best_operation"),
)


def _entry(row: Row[*tuple[Any, ...]], *, is_best: bool) -> ModelEntry:
    """A row as an entry; any value this code cannot read is one `DamagedRegistry` line."""
    where = f"{_shown(row, 'campaign')}/{_shown(row, 'operation')}"
    mapping = row._mapping
    if "best_campaign" in mapping and (
        (mapping["best_campaign"], mapping["best_operation"]) != (row.campaign, row.operation)
    ):
        raise DamagedRegistry(
            f"the registry's best for {mapping['best_campaign']}/{mapping['best_operation']} "
            f"points at a model of {where}; refusing it (the sweep_best row is damaged)"
        )
    field_name = "?"
    try:
        values: dict[str, Any] = {}
        for field_name, convert in _ENTRY_FIELDS:
            values[field_name] = convert(getattr(row, field_name))
    except (TypeError, ValueError, OverflowError, AttributeError) as e:
        raise DamagedRegistry(
            f"registry entry {where} has an unreadable {field_name} "
            f"({type(e).__name__}); the row was damaged or edited by hand"
        ) from None
    return ModelEntry(**values, is_best=is_best)


def _shown(row: Row[*tuple[Any, ...]], name: str) -> str:
    value = str(getattr(row, name, "?"))
    return value if len(value) <= 64 else value[:61] + "..."


def _json_object(text: Any) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a whole number")
    number = int(value)
    if isinstance(value, float) and number != value:
        raise ValueError("not a whole number")
    return number


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError("not a timestamp")
    return value


_ENTRY_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("campaign", _text),
    ("operation", _text),
    ("version", _whole),
    ("study_name", _text),
    ("trial_number", _whole),
    ("objective_value", _finite),
    ("metrics", _json_object),
    ("params", _json_object),
    ("sha256", _text),
    ("size_bytes", _whole),
    ("keras_version", _text),
    ("tensorflow_version", _text),
    ("created_at", _timestamp),
)


def _is_retryable(error: DBAPIError) -> bool:
    if isinstance(error, IntegrityError):
        # Only a duplicate version number: the unique constraint caught a race; read again.
        message = str(error.orig).lower()
        return "uq_sweep_model_versions" in message or "sweep_model_versions.version" in message
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate in _PG_RETRYABLE:
        return True
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    # SQLite is not retried: its busy timeout has already waited a minute for the lock.
    return len(args) > 0 and args[0] in _MYSQL_RETRYABLE


def _validate_candidate(candidate: ModelCandidate) -> None:
    for name in _NAME_LIMITS:
        _check_text(name, getattr(candidate, name))
    if isinstance(candidate.trial_number, bool) or not isinstance(candidate.trial_number, int):
        raise InvalidRegistryValue(
            f"trial_number must be an int, but got {candidate.trial_number!r}."
        )
    objective = candidate.objective_value
    if isinstance(objective, bool) or not isinstance(objective, int | float):
        raise InvalidRegistryValue(f"objective_value must be a float, but got {objective!r}.")
    if not isinstance(candidate.model_bytes, bytes | bytearray):
        raise InvalidRegistryValue(
            f"model_bytes must be bytes, but got {type(candidate.model_bytes).__name__}."
        )
    for what in ("metrics", "params"):
        if not isinstance(getattr(candidate, what), dict):
            raise InvalidRegistryValue(
                f"{what} must be a dict, but got {type(getattr(candidate, what)).__name__}."
            )


def _check_text(name: str, value: object) -> None:
    limit = _NAME_LIMITS[name]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidRegistryValue(
            f"{name} must be a non-empty string of at most {limit} characters, but got {value!r}."
        )


def _dump_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidRegistryValue(f"{what} must be JSON-serialisable, but {e}.") from None


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
