"""Our schema: created fresh, idempotent, upgraded from version 1 with data kept, newer refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
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
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from storage import (
    SCHEMA_VERSION,
    Database,
    IncompatibleSchema,
    ModelCandidate,
    ModelRegistry,
    create_engine,
    ensure_schema,
)
from storage.models import UTCDateTime, metadata, model_versions_table, schema_version_table

StartTogether = Callable[..., list[Any]]
WORKER = str(Path(__file__).with_name("_worker.py"))
OUR_TABLES = {
    "sweep_schema_version", "sweep_campaigns", "sweep_model_versions", "sweep_best",
    "sweep_datasets",
}
V1_MODELS = [
    # (operation, version, bytes)
    ("add", 1, b"first add model" * 1000),
    ("add", 2, b"second add model" * 1000),
    ("mul", 1, b"mul model"),
]


def create_v1_schema(engine: Engine) -> None:
    """Build schema version 1 by hand, as the first release wrote it, with some rows."""
    v1 = MetaData()
    Table(
        "sweep_schema_version",
        v1,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("version", Integer, nullable=False),
    )
    Table(
        "sweep_campaigns",
        v1,
        Column("name", String(64), primary_key=True),
        Column("config", Text, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
    )
    versions = Table(
        "sweep_model_versions",
        v1,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("campaign", String(64), nullable=False),
        Column("operation", String(64), nullable=False),
        Column("version", Integer, nullable=False),
        Column("study_name", String(255), nullable=False),
        Column("trial_number", Integer, nullable=False),
        Column("objective_value", Double(), nullable=False),
        Column("metrics", Text, nullable=False),
        Column("params", Text, nullable=False),
        Column(
            "model_bytes",
            LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
            nullable=False,
        ),
        Column("sha256", String(64), nullable=False),
        Column("keras_version", String(32), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        UniqueConstraint("campaign", "operation", "version"),
    )
    best = Table(
        "sweep_best",
        v1,
        Column("campaign", String(64), primary_key=True),
        Column("operation", String(64), primary_key=True),
        Column("version_id", Integer, ForeignKey("sweep_model_versions.id"), nullable=True),
        Column("objective_value", Double(), nullable=True),
    )
    now = datetime.now(UTC)
    with engine.begin() as connection:
        v1.create_all(connection)
        connection.execute(v1.tables["sweep_schema_version"].insert().values(id=1, version=1))
        connection.execute(
            v1.tables["sweep_campaigns"].insert().values(name="old", config="{}", created_at=now)
        )
        for operation, version, data in V1_MODELS:
            connection.execute(
                versions.insert().values(
                    campaign="old",
                    operation=operation,
                    version=version,
                    study_name=f"old-{operation}",
                    trial_number=version,
                    objective_value=1.0 / version,
                    metrics='{"mae": 0.5}',
                    params='{"units": 8}',
                    model_bytes=data,
                    sha256=hashlib.sha256(data).hexdigest(),
                    keras_version="3.5.0",
                    created_at=now,
                )
            )
        for operation, version in (("add", 2), ("mul", 1)):
            version_id = connection.execute(
                select(versions.c.id).where(
                    versions.c.operation == operation, versions.c.version == version
                )
            ).scalar_one()
            connection.execute(
                best.insert().values(
                    campaign="old",
                    operation=operation,
                    version_id=version_id,
                    objective_value=1.0 / version,
                )
            )


@pytest.fixture
def engine(storage_url: str) -> Iterator[Engine]:
    engine = create_engine(storage_url)
    yield engine
    engine.dispose()


def stored_version(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(select(schema_version_table.c.version)).scalars())


def test_fresh_create(engine: Engine) -> None:
    assert ensure_schema(engine) == SCHEMA_VERSION
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) >= OUR_TABLES
    assert stored_version(engine) == [SCHEMA_VERSION]


def test_idempotent(engine: Engine, storage_url: str) -> None:
    assert ensure_schema(engine) == SCHEMA_VERSION
    assert ensure_schema(engine) == SCHEMA_VERSION
    ModelRegistry(storage_url).close()  # A registry runs it again.
    assert stored_version(engine) == [SCHEMA_VERSION]


def test_upgrade_from_v1_keeps_rows(engine: Engine, storage_url: str) -> None:
    create_v1_schema(engine)
    with engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("sweep_model_versions")}
    assert "size_bytes" not in columns
    assert "tensorflow_version" not in columns

    assert ensure_schema(engine) == SCHEMA_VERSION
    assert stored_version(engine) == [SCHEMA_VERSION]

    # The upgraded table has the same columns and nullability as a freshly created one.
    with engine.connect() as connection:
        upgraded = {
            c["name"]: c["nullable"]
            for c in inspect(connection).get_columns("sweep_model_versions")
        }
    assert upgraded == {c.name: c.nullable for c in model_versions_table.columns}

    with ModelRegistry(storage_url) as registry:
        history = registry.history("old")
        assert [(e.operation, e.version) for e in history] == [
            (operation, version) for operation, version, _ in V1_MODELS
        ]
        for entry, (_, _, data) in zip(history, V1_MODELS, strict=True):
            assert entry.size_bytes == len(data)  # Backfilled from the stored bytes.
            assert entry.tensorflow_version == ""
            assert entry.keras_version == "3.5.0"
            assert entry.params == {"units": 8}
            assert registry.fetch("old", entry.operation, entry.version)[1] == data
        best = registry.best("old", "add")
        assert best is not None and best.version == 2
        assert Database(storage_url).campaigns.load("old") == {}

        # And the registry carries on from where version 1 left off.
        promoted = registry.promote_if_better(
            ModelCandidate(
                campaign="old",
                operation="add",
                study_name="new",
                trial_number=7,
                objective_value=0.1,
                metrics={},
                params={},
                model_bytes=b"new",
                keras_version="3.6.0",
                tensorflow_version="2.18.0",
            )
        )
        assert promoted is not None and promoted.version == 3


def test_half_done_upgrade_is_finished(engine: Engine) -> None:
    """MySQL commits each ALTER on its own; a step cut short is simply run again."""
    create_v1_schema(engine)
    with engine.begin() as connection:
        connection.execute(
            text("ALTER TABLE sweep_model_versions ADD COLUMN size_bytes BIGINT NOT NULL DEFAULT 0")
        )
    assert ensure_schema(engine) == SCHEMA_VERSION
    with engine.connect() as connection:
        sizes = connection.execute(
            select(model_versions_table.c.size_bytes).order_by(model_versions_table.c.id)
        ).scalars()
        assert list(sizes) == [len(data) for _, _, data in V1_MODELS]


def test_newer_version_is_refused(engine: Engine, storage_url: str) -> None:
    ensure_schema(engine)
    with engine.begin() as connection:
        connection.execute(update(schema_version_table).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(IncompatibleSchema) as info:
        ensure_schema(engine)
    message = str(info.value)
    assert f"version {SCHEMA_VERSION + 1}" in message
    assert f"up to {SCHEMA_VERSION}" in message
    assert "\n" not in message
    with pytest.raises(IncompatibleSchema):
        ModelRegistry(storage_url)
    assert stored_version(engine) == [SCHEMA_VERSION + 1]  # Left untouched.


def test_only_our_tables(engine: Engine) -> None:
    assert set(metadata.tables) == OUR_TABLES


def test_concurrent_upgrade(
    engine: Engine, storage_url: str, start_together: StartTogether
) -> None:
    """Several processes upgrading one version-1 database at once: all succeed, once.

    (Racing to create a fresh schema is covered by the registry's promotion race.)
    """
    create_v1_schema(engine)
    results = start_together([[WORKER, "schema", storage_url] for _ in range(3)])
    assert results == [{"version": SCHEMA_VERSION}] * 3
    assert stored_version(engine) == [SCHEMA_VERSION]
    with engine.connect() as connection:
        sizes = connection.execute(
            select(model_versions_table.c.size_bytes).order_by(model_versions_table.c.id)
        ).scalars()
        assert list(sizes) == [len(data) for _, _, data in V1_MODELS]
