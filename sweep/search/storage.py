"""Opening Optuna's storage the one way every part of the sweep does.

Workers, the dashboard, the report and a user's notebook all get the same `SweepStorage`: our
engine options (WAL and a busy timeout on SQLite, small bounded pools on servers), buffered
per-trial writes, and heartbeats so a killed worker's trial is failed and retried.
"""

from __future__ import annotations

import random
import time

import optuna
import sqlalchemy
from sqlalchemy.engine import Engine

from storage import (
    Database,
    ForeignDatabase,
    StorageError,
    StorageInternalError,
    StorageUnavailable,
    check_not_foreign,
    create_engine,
    engine_options,
)
from storage.engine import short_reason
from storage.models import schema_version_table
from sweep import settings
from sweep.errors import SweepError
from sweep.search._optuna import quiet_optuna
from sweep.search._optuna.storage import DATABASE_ERRORS, SweepStorage, backend_of

__all__ = [
    "DATABASE_ERRORS",
    "SweepStorage",
    "backend_of",
    "open_existing_storage",
    "optuna_storage",
]

# A worker killed mid-trial (SIGKILL, machine loss) stops beating; after the grace period any
# worker marks its trial FAIL and the retry callback queues a copy.
MAX_RETRIES_OF_A_STALE_TRIAL = 3
# Workers starting together on a fresh server database: tries at creating Optuna's tables.
_CREATE_ATTEMPTS = 5


def optuna_storage(database: Database) -> SweepStorage:
    """The Optuna storage the sweep's workers use, for `optuna.load_study` and friends.

    ``optuna.load_study(study_name="arith.multiply", storage=sweep.optuna_storage(url))``
    opens a campaign's study exactly as a worker does. Creates Optuna's tables on a fresh
    database; workers starting together race on CREATE TABLE, and the losers try again. On a
    server the database handle then works through Optuna's engine (`Database.share_engine`).

    Raises:
        storage.StorageUnavailable: the database cannot be reached.
    """
    storage = _open_optuna_storage(database)
    if database.dialect != "sqlite":
        database.share_engine(storage.engine)
    return storage


def _open_optuna_storage(database: Database) -> SweepStorage:
    quiet_optuna()
    database.check_reachable()
    database.enable_sqlite_wal()
    if database.dialect == "sqlite":
        # The handle's own engine (SQLite holds no server connections to budget).
        check_not_foreign(database.engine)
        if _optuna_tables_ready(database.engine, database):
            return _open_sweep_storage(database)
        with database.lock("optuna-schema"):  # a file lock: no connection held
            return _open_sweep_storage(database)
    engine = create_engine(database.url, database.patience)
    try:
        ready = _optuna_tables_ready(engine, database)
    finally:
        engine.dispose()
    if ready:
        # Nothing to create; this check's connection is gone before Optuna's engine opens,
        # so a joining worker never holds more than its 2 connections.
        return _open_sweep_storage(database)
    # A server: no lock held across Optuna's table creation, which uses 2 connections at once
    # itself; a lock on a third would need 3 server connections per worker, and behind a
    # small PgBouncer pool that waits forever. Workers racing on CREATE TABLE (or on stamping
    # the version) get a database error; the tables are there on the next try.
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return _open_sweep_storage(database)
        except StorageInternalError as e:
            if attempt + 1 == _CREATE_ATTEMPTS or not _lost_a_creation_race(e):
                raise
            time.sleep(0.2 * (attempt + 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


def _lost_a_creation_race(error: BaseException) -> bool:
    """A database error under `error`: SQLAlchemy's own, or Optuna's wrapping of one (two
    workers inserting Optuna's version row at once get Optuna's StorageInternalError, "An
    exception is raised during the commit", from an IntegrityError)."""
    cause = error.__cause__
    for _ in range(8):  # a chain, not a cycle
        if cause is None:
            return False
        if isinstance(
            cause, sqlalchemy.exc.SQLAlchemyError | optuna.exceptions.StorageInternalError
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _optuna_tables_ready(engine: Engine, database: Database) -> bool:
    """Optuna's tables exist and are stamped (its version row and alembic's revision)."""
    try:
        with engine.connect() as connection:
            inspector = sqlalchemy.inspect(connection)
            if not all(inspector.has_table(t) for t in ("version_info", "alembic_version")):
                return False
            stamped = connection.execute(
                sqlalchemy.text(
                    "SELECT (SELECT count(*) FROM version_info) * (SELECT count(*) FROM "
                    "alembic_version)"
                )
            ).scalar()
            return bool(stamped)
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StorageUnavailable(
            f"cannot read Optuna's tables on {database.masked}: "
            f"{short_reason(e, database.url)}"
        ) from e


def _open_sweep_storage(database: Database) -> SweepStorage:
    current = settings.current()
    try:
        return SweepStorage(
            database.url.text,
            engine_kwargs=engine_options(database.url, database.patience),
            heartbeat_interval=current.heartbeat_interval,
            grace_period=current.grace_period,
            # The campaign's objective writes a trial's parameters as it has suggested them.
            first_beat_with_writes=True,
            heartbeat_stale_trial_callback=(
                optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRIES_OF_A_STALE_TRIAL
                )
            ),
        )
    except (SweepError, StorageError):
        raise
    except Exception as e:  # a full disk, a newer Optuna schema, a refused CREATE
        raise StorageInternalError(
            f"cannot open Optuna's tables on {database.masked}: "
            f"{short_reason(e, database.url)}"
        ) from e


def _require_studies_or_sweep(database: Database) -> None:
    """Optuna would create its tables in any database it is given: a reader refuses one that
    holds neither Optuna's studies nor the sweep's tables (another application's)."""
    try:
        with database.engine.connect() as connection:
            inspector = sqlalchemy.inspect(connection)
            ours = inspector.has_table(schema_version_table.name)
            studies = inspector.has_table("version_info")
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StorageUnavailable(
            f"cannot read the tables of {database.masked}: {short_reason(e, database.url)}"
        ) from e
    if not (ours or studies):
        raise ForeignDatabase(
            f"{database.masked} is not a sweep database (it holds neither studies nor "
            "sweep_* tables) and was left as it was; pass the --storage of a sweep, or run "
            "`sweep run` first"
        )


def open_existing_storage(
    database: Database, error: type[SweepError]
) -> optuna.storages.RDBStorage:
    """Optuna's storage for the dashboard and the report: the same engine options, but every
    write at once (the dashboard's notes and attributes are its users' own, and no trial runs
    here to flush a buffer). A missing SQLite file is refused, not created, and a storage
    Optuna cannot open (e.g. a newer schema) is one `error` line."""
    path = database.sqlite_path
    if path is not None and not path.is_file():
        raise error(f"no database at {str(path)!r}; run `sweep run` first or pass --storage")
    database.check_reachable()
    _require_studies_or_sweep(database)
    quiet_optuna()
    try:
        return optuna.storages.RDBStorage(
            database.url.text, engine_kwargs=engine_options(database.url, database.patience)
        )
    except (SweepError, StorageError):
        raise
    except Exception as e:  # Optuna's own refusals: a newer schema, an alembic failure, ...
        raise error(
            f"cannot open the studies on {database.masked}: {short_reason(e, database.url)}"
        ) from e
