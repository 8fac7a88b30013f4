"""One database handle per process: the URL parsed once, one engine, and what lives on it.

The CLI and `sweep.api` resolve the storage URL once, at the boundary, into a `Database`;
everything below takes that value, never the string. The handle owns the process's engine and
hands out the model registry, the campaign rows and the named locks on it. Optuna's storage is
opened on it by `sweep.search.storage` (the only Optuna importer), which on a server lends the
handle Optuna's engine (`share_engine`): one small pool then serves the whole process.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from sqlalchemy.engine import Engine

from storage.bounds import DEFAULT_PATIENCE_SECONDS
from storage.campaigns import CampaignRows
from storage.datasets import DatasetRows
from storage.engine import (
    check_reachable,
    create_engine,
    enable_sqlite_wal,
    require_sqlite_directory,
)
from storage.errors import StorageUnavailable
from storage.locks import NamedLock
from storage.models import check_sweep_database
from storage.registry import ModelRegistry
from storage.urls import Dialect, StorageURL, as_storage_url, resolve_storage_url

__all__ = ["Database"]

DEFAULT_LOCK_TIMEOUT_SECONDS = 120.0


class Database:
    """A storage URL, parsed once, and the engine, registry, campaign and dataset rows and
    locks on it.

    Opening the handle connects to nothing: the engine is made on first use. Use it as a
    context manager, or call `close`, to release its connections.
    """

    def __init__(
        self,
        url: StorageURL | str,
        *,
        read_only: bool = False,
        patience: float = DEFAULT_PATIENCE_SECONDS,
    ) -> None:
        """Args:
        url: The parsed URL (a string is parsed here: for callers outside the sweep).
        patience: Seconds a worker rides out a lost database; every wait on a server is
            bounded by it (`storage.bounds`).
        read_only: For readers (best, models, predict, pull, serve, report): a SQLite file
            that does not exist is not created, and a database without the sweep's tables
            is refused (`ForeignDatabase`) instead of receiving them.

        Raises:
            InvalidStorageURL: The URL is not a supported storage URL.
        """
        self.url = as_storage_url(url)
        self.read_only = read_only
        self.patience = patience
        self._engine: Engine | None = None
        self._owns_engine = True
        self._registry: ModelRegistry | None = None
        self._campaigns: CampaignRows | None = None
        self._datasets: DatasetRows | None = None

    @classmethod
    def resolve(
        cls,
        cli_value: str | None,
        configured: str | None = None,
        *,
        read_only: bool = False,
        patience: float = DEFAULT_PATIENCE_SECONDS,
    ) -> Database:
        """The database a command names: ``--storage``, else the configured URL
        (``$SWEEP_STORAGE``), else the SQLite default (`storage.resolve_storage_url`)."""
        url = resolve_storage_url(cli_value, configured)
        return cls(url, read_only=read_only, patience=patience)

    @property
    def masked(self) -> str:
        """The URL with its password hidden: for every message and log line."""
        return self.url.masked

    @property
    def dialect(self) -> Dialect:
        return self.url.dialect

    @property
    def sqlite_path(self) -> Path | None:
        return self.url.sqlite_path

    def __repr__(self) -> str:
        return f"Database({self.masked!r})"

    @property
    def engine(self) -> Engine:
        """The process's engine on this database, made on first use (our options and hooks)."""
        if self._engine is None:
            require_sqlite_directory(self.url)
            path = self.url.sqlite_path
            if self.read_only and path is not None and not path.exists():
                raise StorageUnavailable(
                    f"no database at {str(path)!r}; run `sweep run` first or pass --storage"
                )
            self._engine = create_engine(self.url, self.patience)
            self._owns_engine = True
        return self._engine

    def share_engine(self, engine: Engine) -> None:
        """Work through `engine` from now on (a server's Optuna storage lends its own, so the
        process keeps to one small pool); its owner disposes it, `close` does not.

        Raises:
            ValueError: on SQLite, whose engine must carry our transaction hooks (an engine
                without them would autocommit), or once the registry is open on another.
        """
        if self.dialect == "sqlite":
            raise ValueError("a shared engine is for server databases, not SQLite")
        if engine is self._engine:
            return
        if any(rows is not None for rows in (self._registry, self._campaigns, self._datasets)):
            raise ValueError("the registry is already open on this database's own engine")
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
        self._engine = engine
        self._owns_engine = False

    @property
    def registry(self) -> ModelRegistry:
        """The model registry on this database (our tables created or upgraded first)."""
        if self._registry is None:
            if self.read_only:
                check_sweep_database(self.engine, self.masked)
            self._registry = ModelRegistry(self.url, engine=self.engine)
        return self._registry

    @property
    def campaigns(self) -> CampaignRows:
        """The stored campaign configurations on this database."""
        if self._campaigns is None:
            self.registry  # noqa: B018 - our tables must exist first
            self._campaigns = CampaignRows(self.url, self.engine)
        return self._campaigns

    @property
    def datasets(self) -> DatasetRows:
        """The stored tables of campaigns' table-defined operations on this database."""
        if self._datasets is None:
            self.registry  # noqa: B018 - our tables must exist first
            self._datasets = DatasetRows(self.url, self.engine)
        return self._datasets

    def lock(self, name: str, timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS) -> NamedLock:
        """A named lock on this database (`storage.locks.NamedLock`): across hosts on servers,
        a file lock beside the database on SQLite."""
        return NamedLock(self.engine, name, timeout)

    def check_reachable(self) -> None:
        """Connect once and run ``SELECT 1``; creates nothing (`storage.check_reachable`)."""
        check_reachable(self.url, self.patience)

    def enable_sqlite_wal(self) -> None:
        """Switch a SQLite file to WAL (`storage.enable_sqlite_wal`); nothing on a server."""
        enable_sqlite_wal(self.url)

    def close(self) -> None:
        """Release this handle's own connections; idempotent. It may be used again after."""
        self._registry = None
        self._campaigns = None
        self._datasets = None
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
        self._engine = None
        self._owns_engine = True

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
