"""Model registry on every backend: promotion rules, history, fetch with checksum, campaigns.

The race test runs real processes against one database and checks the invariants that
promotion promises: one best per key, the global minimum as best, gapless versions, and
objectives that strictly improve with the version number.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from storage import (
    ChecksumMismatch,
    InvalidRegistryValue,
    ModelCandidate,
    ModelNotFound,
    ModelRegistry,
    create_engine,
)
from storage.models import best_table, model_versions_table

StartTogether = Callable[..., list[Any]]
WORKER = str(Path(__file__).with_name("_worker.py"))


def candidate(
    objective: float,
    *,
    operation: str = "add",
    campaign: str = "c1",
    model_bytes: bytes | None = None,
    trial_number: int = 0,
) -> ModelCandidate:
    return ModelCandidate(
        campaign=campaign,
        operation=operation,
        study_name=f"{campaign}-{operation}",
        trial_number=trial_number,
        objective_value=objective,
        metrics={"mae": objective, "hit_rate": 0.5},
        params={"layers": [8, 4], "activation": "relu"},
        model_bytes=model_bytes if model_bytes is not None else f"model {objective}".encode(),
        keras_version="3.6.0",
        tensorflow_version="2.18.0",
    )


@pytest.fixture
def registry(storage_url: str) -> Iterator[ModelRegistry]:
    with ModelRegistry(storage_url) as registry:
        yield registry


def test_promotion_rules(registry: ModelRegistry) -> None:
    assert registry.best("c1", "add") is None

    first = registry.promote_if_better(candidate(0.5, trial_number=1))
    assert first is not None
    assert (first.version, first.objective_value, first.is_best) == (1, 0.5, True)
    assert first.sha256 == hashlib.sha256(b"model 0.5").hexdigest()
    assert first.size_bytes == len(b"model 0.5")

    assert registry.promote_if_better(candidate(0.7)) is None  # worse
    assert registry.promote_if_better(candidate(0.5)) is None  # equal is not better
    better = registry.promote_if_better(candidate(0.25, trial_number=2))
    assert better is not None and better.version == 2

    best = registry.best("c1", "add")
    assert best == better
    assert best is not None and best.trial_number == 2
    assert best.metrics == {"mae": 0.25, "hit_rate": 0.5}
    assert best.params == {"layers": [8, 4], "activation": "relu"}
    assert [e.version for e in registry.history("c1", "add")] == [1, 2]  # nothing else stored


@pytest.mark.parametrize("objective", [math.nan, math.inf, -math.inf])
def test_non_finite_objective_is_never_promoted(registry: ModelRegistry, objective: float) -> None:
    assert registry.promote_if_better(candidate(objective)) is None
    registry.promote_if_better(candidate(1.0))
    assert registry.promote_if_better(candidate(objective)) is None
    assert [e.objective_value for e in registry.history("c1")] == [1.0]


def test_history_and_best_all(registry: ModelRegistry) -> None:
    for objective in (3.0, 2.0, 1.0):
        registry.promote_if_better(candidate(objective, operation="mul"))
    for objective in (5.0, 4.0):
        registry.promote_if_better(candidate(objective, operation="add"))
    registry.promote_if_better(candidate(9.0, operation="add", campaign="c2"))

    history = registry.history("c1")
    assert [(e.operation, e.version, e.objective_value, e.is_best) for e in history] == [
        ("add", 1, 5.0, False),
        ("add", 2, 4.0, True),
        ("mul", 1, 3.0, False),
        ("mul", 2, 2.0, False),
        ("mul", 3, 1.0, True),
    ]
    assert [e.version for e in registry.history("c1", "mul")] == [1, 2, 3]
    assert registry.history("nope") == []

    assert [(e.operation, e.version) for e in registry.best_all("c1")] == [("add", 2), ("mul", 3)]
    everything = registry.best_all()
    assert [(e.campaign, e.operation) for e in everything] == [
        ("c1", "add"),
        ("c1", "mul"),
        ("c2", "add"),
    ]
    assert all(e.is_best for e in everything)


def test_created_at_is_aware_utc(registry: ModelRegistry) -> None:
    before = datetime.now(UTC)
    registry.promote_if_better(candidate(1.0))
    entry = registry.best("c1", "add")
    assert entry is not None
    assert entry.created_at.tzinfo is not None
    assert entry.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= entry.created_at <= datetime.now(UTC)


def test_fetch(registry: ModelRegistry) -> None:
    registry.promote_if_better(candidate(2.0, model_bytes=b"v1 bytes"))
    registry.promote_if_better(candidate(1.0, model_bytes=b"v2 bytes"))

    entry, data = registry.fetch("c1", "add")
    assert (entry.version, data, entry.is_best) == (2, b"v2 bytes", True)
    entry, data = registry.fetch("c1", "add", 1)
    assert (entry.version, data, entry.is_best) == (1, b"v1 bytes", False)


def test_fetch_not_found_names_what_exists(registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFound, match=r"'c1'.*'add'.*nothing was promoted"):
        registry.fetch("c1", "add")
    for objective in (3.0, 2.0, 1.0):
        registry.promote_if_better(candidate(objective))
    with pytest.raises(ModelNotFound) as info:
        registry.fetch("c1", "add", 7)
    message = str(info.value)
    assert "version 7" in message
    assert "versions that exist: 1-3" in message
    assert "\n" not in message
    with pytest.raises(InvalidRegistryValue):
        registry.fetch("c1", "add", "2")  # type: ignore[arg-type]


def test_fetch_detects_corruption(registry: ModelRegistry, storage_url: str) -> None:
    registry.promote_if_better(candidate(2.0, model_bytes=b"good one"))
    registry.promote_if_better(candidate(1.0, model_bytes=b"good two"))
    engine = create_engine(storage_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(model_versions_table)
                .where(model_versions_table.c.version == 2)
                .values(model_bytes=b"tampered")
            )
    finally:
        engine.dispose()
    with pytest.raises(ChecksumMismatch) as info:
        registry.fetch("c1", "add")
    message = str(info.value)
    assert "version 2" in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert hashlib.sha256(b"good two").hexdigest() in message
    assert registry.fetch("c1", "add", 1)[1] == b"good one"  # The others are unaffected.


def test_five_megabyte_model_round_trip(registry: ModelRegistry) -> None:
    """MySQL's BLOB stops at 64 KB; this only passes with LONGBLOB there."""
    data = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    entry = registry.promote_if_better(candidate(1.0, model_bytes=data))
    assert entry is not None and entry.size_bytes == len(data) == 5 * 1024 * 1024
    fetched_entry, fetched = registry.fetch("c1", "add")
    assert fetched == data
    assert fetched_entry.sha256 == hashlib.sha256(data).hexdigest()


def test_invalid_candidates(registry: ModelRegistry) -> None:
    with pytest.raises(InvalidRegistryValue, match="campaign must be"):
        registry.promote_if_better(candidate(1.0, campaign="x" * 65))
    with pytest.raises(InvalidRegistryValue, match="operation must be"):
        registry.promote_if_better(candidate(1.0, operation=""))
    with pytest.raises(InvalidRegistryValue, match="params must be JSON"):
        registry.promote_if_better(replace(candidate(1.0), params={"f": object()}))
    with pytest.raises(InvalidRegistryValue, match="objective_value"):
        registry.promote_if_better(replace(candidate(1.0), objective_value="1"))  # type: ignore[arg-type]
    assert registry.history("c1") == []


def test_names_are_case_sensitive_and_unicode_everywhere(registry: ModelRegistry) -> None:
    registry.promote_if_better(candidate(1.0, operation="Add"))
    registry.promote_if_better(candidate(2.0, operation="add"))
    assert [(e.operation, e.version) for e in registry.best_all("c1")] == [("Add", 1), ("add", 1)]
    name = "größe-🚀"  # 4-byte UTF-8 needs utf8mb4 on MariaDB
    registry.promote_if_better(candidate(1.0, campaign=name, operation=name))
    assert [e.operation for e in registry.history(name)] == [name]
    assert registry.fetch(name, name)[1] == b"model 1.0"


def test_in_memory_sqlite() -> None:
    with ModelRegistry("sqlite://") as registry:
        assert registry.promote_if_better(candidate(1.0)) is not None
        assert registry.fetch("c1", "add")[1] == b"model 1.0"


def test_promotion_race(storage_url: str, start_together: StartTogether) -> None:
    """Processes promoting concurrently never break the registry's invariants.

    The workers open their registries at the same moment on a fresh database, so this also
    races the creation of the schema.
    """
    workers, rounds = 6, 10
    results = start_together(
        [[WORKER, "promote", storage_url, str(index), str(rounds)] for index in range(workers)]
    )
    submitted = [item for result in results for item in result["submitted"]]
    assert len(submitted) == workers * rounds

    with ModelRegistry(storage_url) as registry:
        for operation in ("add", "mul"):
            mine = [item for item in submitted if item["operation"] == operation]
            history = registry.history("race", operation)

            # Versions are 1..n: no gaps, no duplicates, none lost.
            assert [e.version for e in history] == list(range(1, len(history) + 1))
            # Every promotion a worker was told about is stored, under the version it was told.
            reported = sorted(
                (item["version"], item["trial_number"]) for item in mine if item["version"]
            )
            assert reported == [(e.version, e.trial_number) for e in history]
            # Each promotion strictly improved on the one before.
            objectives = [e.objective_value for e in history]
            assert all(a > b for a, b in itertools.pairwise(objectives))
            # The best is the last version and the global minimum of all submissions.
            best = registry.best("race", operation)
            assert best is not None and best.version == len(history)
            assert best.objective_value == min(item["objective"] for item in mine)
            assert [e.is_best for e in history] == [False] * (len(history) - 1) + [True]
            # The stored bytes are intact.
            entry, data = registry.fetch("race", operation)
            assert hashlib.sha256(data).hexdigest() == entry.sha256

    engine = create_engine(storage_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(best_table.c.operation, func.count())
                .where(best_table.c.campaign == "race")
                .group_by(best_table.c.operation)
                .order_by(best_table.c.operation)
            ).all()
        assert [tuple(row) for row in rows] == [("add", 1), ("mul", 1)]
    finally:
        engine.dispose()
