"""Dataset rows on every backend: stored once, read back checked, conflicts and damage refused,
the size cap, the save race, and the upgrade of a version-2 database."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Engine

from storage import (
    MAX_DATASET_BYTES,
    SCHEMA_VERSION,
    CampaignConflict,
    ChecksumMismatch,
    DamagedRegistry,
    Database,
    InvalidRegistryValue,
    create_engine,
    ensure_schema,
    models,
)
from storage.models import campaigns_table, datasets_table, metadata, schema_version_table


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_round_trip_and_conflicts(storage_url: str) -> None:
    blob = os.urandom(2**20)
    with Database(storage_url) as database:
        rows = database.datasets
        assert rows.load("gas", "P") is None
        assert rows.names("gas") == []
        assert rows.save("gas", "P", blob, sha(blob)) is True
        assert rows.load("gas", "P") == (blob, sha(blob))
        assert rows.save("gas", "P", blob, sha(blob)) is False  # the same table: no change
        other = blob[:-1] + b"\0"
        with pytest.raises(CampaignConflict) as info:
            rows.save("gas", "P", other, sha(other))
        assert one_line(info) == (
            f"campaign 'gas' dataset 'P' is stored with another table (sha256 "
            f"{sha(blob)[:12]}...); use another campaign name"
        )
        assert rows.load("gas", "P") == (blob, sha(blob))  # left as it was
        assert rows.save("gas", "Q", other, sha(other)) is True
        assert rows.save("oil", "P", other, sha(other)) is True
        name = "größe-🚀"  # 4-byte UTF-8 needs utf8mb4 on MariaDB
        assert rows.save(name, name, b"", sha(b"")) is True
        assert rows.load(name, name) == (b"", sha(b""))
        assert rows.names("gas") == ["P", "Q"]
        assert rows.names("nothing") == []
    # Another process (another handle) reads the same rows.
    with Database(storage_url, read_only=True) as reader:
        assert reader.datasets.load("oil", "P") == (other, sha(other))


def test_refused_values(storage_url: str) -> None:
    with Database(storage_url) as database:
        rows = database.datasets
        too_big = b"\1" * (MAX_DATASET_BYTES + 1)
        with pytest.raises(InvalidRegistryValue) as info:
            rows.save("gas", "P", too_big, sha(too_big))
        assert f"is {MAX_DATASET_BYTES + 1:,} bytes; at most {MAX_DATASET_BYTES:,}" in one_line(
            info
        )
        with pytest.raises(InvalidRegistryValue) as info:
            rows.save("gas", "P", b"abc", sha(b"abd"))
        assert f"hash to sha256 {sha(b'abc')[:12]}..., not the given" in one_line(info)
        for campaign, name in (("", "P"), ("gas", ""), ("gas", "n" * 65), ("c" * 65, "P")):
            with pytest.raises(InvalidRegistryValue):
                rows.save(campaign, name, b"abc", sha(b"abc"))
        assert rows.names("gas") == []


def test_the_largest_table_fits(storage_url: str) -> None:
    """A table at the cap goes through one INSERT on every backend (MariaDB: the packet)."""
    blob = os.urandom(MAX_DATASET_BYTES)
    with Database(storage_url) as database:
        assert database.datasets.save("big", "t", blob, sha(blob)) is True
        stored = database.datasets.load("big", "t")
        assert stored is not None and stored[0] == blob


@pytest.mark.parametrize(
    "change",
    [
        {"data": b"tampered"},
        {"sha256": "0" * 64},
        {"size_bytes": 3},
    ],
    ids=["data", "sha256", "size"],
)
def test_damage_is_detected_on_load(storage_url: str, change: dict[str, object]) -> None:
    blob = os.urandom(1000)
    with Database(storage_url) as database:
        database.datasets.save("gas", "P", blob, sha(blob))
        with database.engine.begin() as connection:
            connection.execute(update(datasets_table).values(**change))
        with pytest.raises(ChecksumMismatch) as info:
            database.datasets.load("gas", "P")
        message = one_line(info)
        assert "campaign 'gas' dataset 'P'" in message and "is corrupt" in message
        assert "the row was damaged or edited by hand" in message


def test_save_race(storage_url: str) -> None:
    """Many threads, each with its own database handle, save one (campaign, name) at once:
    one stores, the same bytes are no change, other bytes are a conflict."""
    handles = [Database(storage_url) for _ in range(6)]
    blobs = [b"first" * 1000 if i % 3 else b"second" * 1000 for i in range(len(handles))]
    barrier = threading.Barrier(len(handles))
    outcomes: dict[int, object] = {}

    def save(index: int) -> None:
        try:
            barrier.wait()
            blob = blobs[index]
            outcomes[index] = handles[index].datasets.save("race", "t", blob, sha(blob))
        except BaseException as e:
            outcomes[index] = e

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        stored = handles[0].datasets.load("race", "t")
        assert stored is not None
        winner = [i for i, outcome in outcomes.items() if outcome is True]
        assert len(winner) == 1 and blobs[winner[0]] == stored[0]
        for index, outcome in outcomes.items():
            if index in winner:
                continue
            if blobs[index] == stored[0]:
                assert outcome is False
            else:
                assert isinstance(outcome, CampaignConflict), outcome
    finally:
        for handle in handles:
            handle.close()


# --- the upgrade from schema version 2 ---------------------------------------------------------


@pytest.fixture
def engine(storage_url: str) -> Iterator[Engine]:
    engine = create_engine(storage_url)
    yield engine
    engine.dispose()


def create_v2_schema(engine: Engine) -> None:
    """Version 2 is version 3 without `sweep_datasets`; with a campaign row in it."""
    with engine.begin() as connection:
        metadata.create_all(
            connection, tables=[t for t in metadata.sorted_tables if t is not datasets_table]
        )
        connection.execute(schema_version_table.insert().values(id=1, version=2))
        connection.execute(
            campaigns_table.insert().values(name="old", config="{}", created_at=datetime.now(UTC))
        )


def table_names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_upgrade_from_v2_adds_the_table(engine: Engine, storage_url: str) -> None:
    assert SCHEMA_VERSION == 3
    create_v2_schema(engine)
    assert "sweep_datasets" not in table_names(engine)
    assert ensure_schema(engine) == SCHEMA_VERSION
    assert "sweep_datasets" in table_names(engine)
    with engine.connect() as connection:
        assert list(connection.execute(select(schema_version_table.c.version)).scalars()) == [3]
        columns = {c["name"] for c in inspect(connection).get_columns("sweep_datasets")}
    assert columns == {c.name for c in datasets_table.columns}
    with Database(storage_url) as database:
        assert database.campaigns.load("old") == {}
        assert database.datasets.save("old", "t", b"rows", sha(b"rows")) is True


def test_the_upgrade_step_alone_is_idempotent(engine: Engine) -> None:
    """MySQL commits DDL at once: a step cut short is run again from its start, so it must
    create the table where it is missing and do nothing where it is there."""
    create_v2_schema(engine)
    for _ in range(2):
        with engine.begin() as connection:
            models._upgrade_2_to_3(connection)
        assert "sweep_datasets" in table_names(engine)


def test_a_damaged_row_value_is_one_line(tmp_path: Path) -> None:
    """A value of another type where a number belongs (SQLite keeps whatever was written)."""
    with Database(f"sqlite:///{tmp_path / 'sweeps.db'}") as database:
        database.datasets.save("gas", "P", b"abc", sha(b"abc"))
        with database.engine.begin() as connection:
            connection.execute(update(datasets_table).values(size_bytes="many"))
        with pytest.raises(DamagedRegistry) as info:
            database.datasets.load("gas", "P")
        assert "the row was damaged or edited by hand" in one_line(info)
