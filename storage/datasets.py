"""Dataset rows: the tables of a campaign's table-defined operations, stored with it so that
a worker on another host needs only the database URL.

The bytes are opaque here (the sweep packs and checks the table itself); this module stores
them once per (campaign, name), never replaces them, and checks their sha256 on every read.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from storage._boundary import connect, retrying, translated
from storage.engine import SQLITE_BEGIN_IMMEDIATE
from storage.errors import (
    CampaignConflict,
    ChecksumMismatch,
    InvalidRegistryValue,
    StorageInternalError,
)
from storage.models import datasets_table
from storage.rows import check_text, reading
from storage.urls import StorageURL

__all__ = ["MAX_DATASET_BYTES", "DatasetRows"]

# The bytes travel in one INSERT, and MariaDB refuses a statement over max_allowed_packet
# (16 MiB by default); PyMySQL writes bytes as a hex literal, twice their size, so 6 MiB (12
# on the wire) leaves room. PostgreSQL and SQLite (1 GB per value) are not the limit.
MAX_DATASET_BYTES = 6 * 2**20
_NAME_LIMIT = 64

_ds = datasets_table


class DatasetRows:
    """The ``sweep_datasets`` table of one database (`storage.Database.datasets`)."""

    def __init__(self, url: StorageURL, engine: Engine) -> None:
        self._url = url
        self._engine = engine
        # Writers begin as the campaigns' do: SQLite takes its write lock up front, servers
        # read what the previous writer committed.
        if engine.dialect.name == "sqlite":
            self._writer: Engine = engine.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        else:
            self._writer = engine.execution_options(isolation_level="READ COMMITTED")

    def save(self, campaign: str, name: str, blob: bytes, sha256: str) -> bool:
        """Store a campaign's table unless it is stored already; race-safe.

        Stored bytes are never replaced: trials of the campaign were (or are being) trained
        on them. The same bytes again (a re-run, a second worker) are no change.

        Returns:
            True if this call stored it, False if the same bytes (same sha256) were there.

        Raises:
            CampaignConflict: other bytes are stored under that campaign and name.
            InvalidRegistryValue: a name is empty or too long, `blob` is over
                `MAX_DATASET_BYTES`, or `sha256` is not the bytes' checksum.
        """
        check_text("campaign", campaign)
        _check_name(name)
        if not isinstance(blob, bytes | bytearray):
            raise InvalidRegistryValue(f"dataset bytes must be bytes, not {type(blob).__name__}.")
        where = f"campaign {campaign!r} dataset {name!r}"
        if len(blob) > MAX_DATASET_BYTES:
            raise InvalidRegistryValue(
                f"{where} is {len(blob):,} bytes; at most {MAX_DATASET_BYTES:,} can be stored "
                "(one INSERT must fit MariaDB's default max_allowed_packet, 16 MiB)."
            )
        actual = hashlib.sha256(blob).hexdigest()
        if not isinstance(sha256, str) or sha256 != actual:
            raise InvalidRegistryValue(
                f"{where}: its bytes hash to sha256 {actual[:12]}..., not the given "
                f"{str(sha256)[:16]!r}."
            )
        values = {
            "campaign": campaign,
            "name": name,
            "sha256": actual,
            "size_bytes": len(blob),
            "data": bytes(blob),
        }
        with translated(self._engine, f"saving {where}"):
            stored = retrying(lambda: self._insert(values))
        if stored is None:
            return True
        if stored == actual:
            return False
        raise CampaignConflict(
            f"{where} is stored with another table (sha256 {stored[:12]}...); use another "
            "campaign name"
        )

    def _insert(self, values: dict[str, object]) -> str | None:
        """Insert the row; None if inserted, else the stored row's sha256."""
        campaign, name = str(values["campaign"]), str(values["name"])
        with connect(self._writer) as connection:
            try:
                with connection.begin():
                    stored = self._stored_sha256(connection, campaign, name)
                    if stored is not None:
                        return stored
                    connection.execute(_ds.insert().values(**values, created_at=datetime.now(UTC)))
                    return None
            except IntegrityError:
                pass  # Inserted concurrently between our check and our insert: read it.
        with connect(self._engine) as connection:
            stored = self._stored_sha256(connection, campaign, name)
        if stored is None:
            raise StorageInternalError(
                f"dataset {campaign}/{name} was refused as a duplicate, but no such row exists."
            )
        return stored

    def _stored_sha256(self, connection: Connection, campaign: str, name: str) -> str | None:
        found = connection.execute(
            select(_ds.c.sha256).where(_ds.c.campaign == campaign, _ds.c.name == name)
        ).scalar()
        return None if found is None else str(found)

    def load(self, campaign: str, name: str) -> tuple[bytes, str] | None:
        """A stored table's bytes and sha256, or None when none is stored under that name.

        Raises:
            ChecksumMismatch: the stored bytes do not hash to the recorded sha256 (or their
                recorded size), i.e. the row was damaged or edited by hand.
        """
        where = f"campaign {campaign!r} dataset {name!r}"
        with (
            reading(f"loading {where}"),
            translated(self._engine, f"loading {where}"),
            connect(self._engine) as connection,
        ):
            row = connection.execute(
                select(_ds.c.data, _ds.c.sha256, _ds.c.size_bytes).where(
                    _ds.c.campaign == campaign, _ds.c.name == name
                )
            ).first()
            if row is None:
                return None
            data, recorded, size = bytes(row.data), str(row.sha256), int(row.size_bytes)
        actual = hashlib.sha256(data).hexdigest()
        if actual != recorded or size != len(data):
            raise ChecksumMismatch(
                f"{where} in {self._url.masked} is corrupt: its {len(data):,} bytes hash to "
                f"sha256 {actual[:12]}..., but {recorded[:12]!r}... ({size:,} bytes) was "
                "recorded; the row was damaged or edited by hand."
            )
        return data, recorded

    def names(self, campaign: str) -> list[str]:
        """The names of a campaign's stored tables, sorted."""
        with (
            translated(self._engine, f"listing the datasets of campaign {campaign!r}"),
            connect(self._engine) as connection,
        ):
            names = connection.execute(
                select(_ds.c.name).where(_ds.c.campaign == campaign)
            ).scalars()
            return sorted(str(name) for name in names)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or len(name) > _NAME_LIMIT:
        raise InvalidRegistryValue(
            f"dataset name must be a non-empty string of at most {_NAME_LIMIT} characters, "
            f"but got {name!r}."
        )
