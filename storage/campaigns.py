"""Campaign rows: each campaign's whole configuration, stored once so that any worker on any
host needs only the database URL and the campaign's name."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from storage._boundary import connect, retrying, translated
from storage.engine import SQLITE_BEGIN_IMMEDIATE
from storage.errors import CampaignConflict, DamagedRegistry, InvalidRegistryValue, ModelNotFound
from storage.locks import transaction_lock
from storage.models import campaigns_table
from storage.rows import check_text, dump_json
from storage.urls import StorageURL

__all__ = ["CampaignMerge", "CampaignRows"]

# Given the stored config (None for a new campaign), returns the config to store (None: keep
# the stored one); raises to refuse. Runs under the campaigns lock, in the same transaction.
CampaignMerge = Callable[[dict[str, Any] | None], dict[str, Any] | None]
_CAMPAIGNS_LOCK = "sweep-campaigns"


class CampaignRows:
    """The ``sweep_campaigns`` table of one database (`storage.Database.campaigns`)."""

    def __init__(self, url: StorageURL, engine: Engine) -> None:
        self._url = url
        self._engine = engine
        self._dialect = engine.dialect.name
        # Writers begin as the registry's do: SQLite takes its write lock up front, servers
        # read what the previous lock holder committed.
        if self._dialect == "sqlite":
            self._writer: Engine = engine.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        else:
            self._writer = engine.execution_options(isolation_level="READ COMMITTED")

    def save(self, name: str, config: dict[str, Any]) -> bool:
        """Record a campaign's configuration unless one of that name exists; race-safe.

        Returns:
            True if this call created it, False if it already existed (left unchanged).
        """
        check_text("campaign", name)
        if not isinstance(config, dict):
            raise InvalidRegistryValue(
                f"campaign config must be a dict, but got {type(config).__name__}."
            )
        config_json = dump_json(config, "campaign config")
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

    def update(self, name: str, config: dict[str, Any]) -> None:
        """Replace an existing campaign's stored configuration (its run settings changed).

        Raises:
            ModelNotFound: No campaign has that name.
        """
        check_text("campaign", name)
        config_json = dump_json(config, "campaign config")
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
            raise ModelNotFound(f"no campaign named {name!r} in {self._url.masked}")

    def load(self, name: str) -> dict[str, Any] | None:
        """A campaign's saved configuration, or None if no campaign has that name."""
        with (
            translated(self._engine, f"loading campaign {name!r}"),
            connect(self._engine) as connection,
        ):
            config = connection.execute(
                select(campaigns_table.c.config).where(campaigns_table.c.name == name)
            ).scalar()
        return None if config is None else self._parse_campaign(name, config)

    def register(self, name: str, merge: CampaignMerge) -> dict[str, Any]:
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
        check_text("campaign", name)
        with translated(self._engine, f"saving campaign {name!r}"):
            return retrying(lambda: self._register_once(name, merge))

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
                            config=dump_json(config, "campaign config"),
                            created_at=datetime.now(UTC),
                        )
                    )
                    return config
                if wanted is not None and wanted != stored:
                    connection.execute(
                        campaigns_table.update()
                        .where(campaigns_table.c.name == name)
                        .values(config=dump_json(wanted, "campaign config"))
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
                f"campaign {name!r} in {self._url.masked} has a stored config that is not a JSON "
                "object; the row was damaged or edited by hand"
            )
        return loaded

    def names(self) -> list[str]:
        """Names of all saved campaigns, sorted."""
        with translated(self._engine, "listing campaigns"), connect(self._engine) as connection:
            names = connection.execute(
                select(campaigns_table.c.name).order_by(campaigns_table.c.name)
            ).scalars()
            return sorted(str(name) for name in names)
