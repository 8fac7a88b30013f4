"""Our own tables (prefixed ``sweep_``) next to Optuna's, and their versioned upgrades.

Optuna owns its tables and migrates them itself; we never touch them. Our schema carries a
version number in ``sweep_schema_version``; `ensure_schema` creates what is missing and applies
the ordered upgrade steps under a per-database lock, so many workers may call it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeDecorator, TypeEngine

from storage._boundary import connect, masked, translated
from storage.engine import SQLITE_BEGIN_IMMEDIATE
from storage.errors import ForeignDatabase, IncompatibleSchema, StorageInternalError
from storage.locks import transaction_lock

__all__ = [
    "OPTUNA_TABLES",
    "SCHEMA_VERSION",
    "UTCDateTime",
    "best_table",
    "campaigns_table",
    "check_not_foreign",
    "check_sweep_database",
    "datasets_table",
    "ensure_schema",
    "metadata",
    "model_versions_table",
    "schema_version_table",
]

# Constraint names fixed by convention, so every backend gets the same names and a later
# upgrade step can refer to them. On MySQL every table is InnoDB (row locks, foreign keys) and
# utf8mb4_bin (any name fits, and "Add" differs from "add" as on PostgreSQL and SQLite).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# MySQL's BLOB and TEXT stop at 64 KB; a saved Keras model is larger than that.
_Blob: TypeEngine[bytes] = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_JSONText: TypeEngine[str] = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend.

    PostgreSQL stores ``timestamptz``; SQLite and MySQL have no zone, so naive UTC is stored
    and the zone is put back on read. MySQL gets microseconds (its DATETIME drops them).
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"datetime must be timezone-aware, but got {value!r}.")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


schema_version_table = Table(
    "sweep_schema_version",
    metadata,
    # A fixed key of 1 makes "one row only" a constraint, not a hope.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

campaigns_table = Table(
    "sweep_campaigns",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("config", _JSONText, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

model_versions_table = Table(
    "sweep_model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("study_name", String(255), nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("objective_value", Double(), nullable=False),
    Column("metrics", _JSONText, nullable=False),
    Column("params", _JSONText, nullable=False),
    Column("model_bytes", _Blob, nullable=False),
    Column("sha256", String(64), nullable=False),
    # Added in schema version 2; the server defaults let ALTER TABLE fill existing rows.
    Column("size_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("keras_version", String(32), nullable=False),
    Column("tensorflow_version", String(32), nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("campaign", "operation", "version"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

best_table = Table(
    "sweep_best",
    metadata,
    # The primary key is what makes "one current best per (campaign, operation)" true.
    Column("campaign", String(64), primary_key=True),
    Column("operation", String(64), primary_key=True),
    Column("version_id", Integer, ForeignKey("sweep_model_versions.id"), nullable=True),
    Column("objective_value", Double(), nullable=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

datasets_table = Table(
    "sweep_datasets",
    metadata,
    # A campaign's tables (operations defined by data), stored once with it so that a worker
    # on another host needs only the database URL; added in schema version 3.
    Column("campaign", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("data", _Blob, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)


# --- upgrades ---------------------------------------------------------------------------------
# Step k upgrades version k to k + 1. Steps must be idempotent: MySQL commits every DDL
# statement implicitly, so a step interrupted half way is run again from its start.


def _upgrade_1_to_2(connection: Connection) -> None:
    """Record each model's size and TensorFlow version (version 1 kept only Keras's)."""
    columns = {c["name"] for c in inspect(connection).get_columns("sweep_model_versions")}
    if "size_bytes" not in columns:
        connection.execute(
            text("ALTER TABLE sweep_model_versions ADD COLUMN size_bytes BIGINT NOT NULL DEFAULT 0")
        )
    if "tensorflow_version" not in columns:
        connection.execute(
            text(
                "ALTER TABLE sweep_model_versions "
                "ADD COLUMN tensorflow_version VARCHAR(32) NOT NULL DEFAULT ''"
            )
        )
    # LENGTH counts bytes of a BLOB/bytea on all three backends.
    connection.execute(
        text(
            "UPDATE sweep_model_versions SET size_bytes = LENGTH(model_bytes) "
            "WHERE size_bytes = 0 AND LENGTH(model_bytes) > 0"
        )
    )


def _upgrade_2_to_3(connection: Connection) -> None:
    """Store campaigns' tables (`sweep_datasets`). `create_all` has usually made it already;
    the step stands on its own all the same, and creates it only where it is missing."""
    datasets_table.create(connection, checkfirst=True)


_UPGRADES: list[Callable[[Connection], None]] = [_upgrade_1_to_2, _upgrade_2_to_3]

SCHEMA_VERSION = len(_UPGRADES) + 1
"""The version this code writes; a database at a higher version is refused."""

_SCHEMA_LOCK = "sweep-schema"
_SCHEMA_LOCK_TIMEOUT_SECONDS = 60


# Tables that may share our database: Optuna's (its RDB storage, all versions since 2.x) and
# SQLite's own bookkeeping.
OPTUNA_TABLES = frozenset({
    "studies", "study_directions", "study_user_attributes", "study_system_attributes",
    "trials", "trial_user_attributes", "trial_system_attributes", "trial_params",
    "trial_values", "trial_intermediate_values", "trial_heartbeats", "version_info",
    "alembic_version",
})
_SQLITE_TABLES = frozenset({"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})


def check_not_foreign(engine: Engine) -> None:
    """Refuse to write our tables into another application's SQLite file.

    A server database is routinely shared with other schemas, a SQLite file is not: one that
    holds tables that are neither ours nor Optuna's belongs to someone else, and is left as
    it was.

    Raises:
        ForeignDatabase: the file holds other tables.
    """
    if engine.dialect.name != "sqlite":
        return
    with translated(engine, "reading the tables"), connect(engine) as connection:
        names = set(inspect(connection).get_table_names())
    ours = {table.name for table in metadata.sorted_tables}
    foreign = sorted(names - ours - OPTUNA_TABLES - _SQLITE_TABLES)
    if foreign:
        shown = ", ".join(repr(n[:40]) for n in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ForeignDatabase(
            f"{masked(engine)} holds tables of another application ({shown}{more}); it is "
            "not a sweep database, and nothing was written to it: pass another --storage"
        )


def check_sweep_database(engine: Engine, shown: str) -> None:
    """Refuse, before anything is written, a database in which no sweep ever wrote.

    For readers (`sweep best`, `predict`, `serve`, ...): pointed at another application's
    database (or MariaDB's `mysql` schema), they must not create our tables there.

    Args:
        shown: The database's URL as messages show it (password masked).

    Raises:
        ForeignDatabase: our tables are not there.
    """
    check_not_foreign(engine)
    with translated(engine, "checking for the sweep's tables"), connect(engine) as connection:
        ours = inspect(connection).has_table(schema_version_table.name)
    if not ours:
        raise ForeignDatabase(
            f"{shown} is not a sweep database (it has no sweep_* tables) and was "
            "left as it was; pass the --storage of a sweep, or run `sweep run` first"
        )


def ensure_schema(engine: Engine) -> int:
    """Create our missing tables and upgrade them to `SCHEMA_VERSION`; idempotent.

    Cheap when the schema is current (one read, no lock). Otherwise the work runs under the
    database's named lock (`storage.locks.NamedLock`), so concurrent callers wait for one
    another; a create race with some other writer is retried once.

    Returns:
        The schema version now in the database (always `SCHEMA_VERSION`).

    Raises:
        IncompatibleSchema: The database was written by newer code.
        StorageUnavailable: The database cannot be reached.
        StorageInternalError: Any other database error.
    """
    with translated(engine, "checking the schema version"), connect(engine) as connection:
        current = _read_version(connection)
    if current == SCHEMA_VERSION:
        return current
    _refuse_newer(current, engine)
    check_not_foreign(engine)
    for attempt in range(2):
        try:
            with translated(engine, "creating or upgrading the schema"):
                return _create_and_upgrade(engine)
        except StorageInternalError as e:
            # Creating a table that someone else created a moment ago fails on every backend
            # with a different error class; one retry sees the table and skips it.
            if attempt == 1 or not isinstance(e.__cause__, DBAPIError):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _read_version(connection: Connection) -> int | None:
    """The stored version, or None when the table or its row is missing."""
    if not inspect(connection).has_table(schema_version_table.name):
        return None
    row = connection.execute(
        select(schema_version_table.c.version).where(schema_version_table.c.id == 1)
    ).first()
    return None if row is None else int(row[0])


def _refuse_newer(version: int | None, engine: Engine) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise IncompatibleSchema(
            f"database {masked(engine)} has sweep schema version {version}, but this code "
            f"supports versions up to {SCHEMA_VERSION}; upgrade the sweep package."
        )


def _create_and_upgrade(engine: Engine) -> int:
    if engine.dialect.name == "sqlite":
        # SQLite's own write lock, taken when the transaction begins, serialises the upgrade.
        with connect(engine) as connection:
            immediate = connection.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            with immediate.begin():
                return _create_and_upgrade_locked(immediate, engine)
    # Servers: the schema lock (storage.locks). PostgreSQL takes it inside this transaction
    # (DDL is transactional there), MySQL on a connection of its own, held across its implicit
    # commits of DDL.
    with connect(engine) as connection, connection.begin(), transaction_lock(
        connection, _SCHEMA_LOCK, timeout=_SCHEMA_LOCK_TIMEOUT_SECONDS
    ):
        return _create_and_upgrade_locked(connection, engine)


def _create_and_upgrade_locked(connection: Connection, engine: Engine) -> int:
    # Read before creating: a newer schema may have dropped a table we would recreate.
    stored = _read_version(connection)
    _refuse_newer(stored, engine)
    metadata.create_all(connection, checkfirst=True)
    # Tables we just created are already current, and the (idempotent) steps find nothing to
    # do on them. Our tables without a version row (a first run cut short) count as version 1.
    version = 1 if stored is None else stored
    for step in range(version, SCHEMA_VERSION):
        _UPGRADES[step - 1](connection)
        _write_version(connection, step + 1)  # Progress survives MySQL's implicit commits.
    if stored != SCHEMA_VERSION:
        _write_version(connection, SCHEMA_VERSION)  # A fresh database with nothing to upgrade.
    return SCHEMA_VERSION


def _write_version(connection: Connection, version: int) -> None:
    # Existence is checked rather than UPDATE's rowcount, which MySQL may report as 0 for an
    # unchanged row.
    exists = connection.execute(
        select(schema_version_table.c.id).where(schema_version_table.c.id == 1)
    ).first()
    if exists is None:
        connection.execute(schema_version_table.insert().values(id=1, version=version))
    else:
        connection.execute(
            schema_version_table.update()
            .where(schema_version_table.c.id == 1)
            .values(version=version)
        )
