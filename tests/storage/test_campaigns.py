"""Campaign rows on every backend: save once, load, update, list, and the save race."""

from __future__ import annotations

import threading

import pytest

from storage import Database, InvalidRegistryValue, ModelNotFound


def test_campaigns(storage_url: str) -> None:
    campaigns = Database(storage_url).campaigns
    assert campaigns.load("alpha") is None
    assert campaigns.names() == []
    assert campaigns.save("beta", {"operations": ["add"], "seed": 1}) is True
    assert campaigns.save("alpha", {"n": 2.5}) is True
    assert campaigns.save("beta", {"operations": ["mul"]}) is False  # kept as it was
    assert campaigns.load("beta") == {"operations": ["add"], "seed": 1}
    assert campaigns.names() == ["alpha", "beta"]
    with pytest.raises(InvalidRegistryValue):
        campaigns.save("", {})
    campaigns.update("alpha", {"n": 3})
    assert campaigns.load("alpha") == {"n": 3}
    with pytest.raises(ModelNotFound, match="no campaign named 'gamma'"):
        campaigns.update("gamma", {})
    name = "größe-🚀"  # 4-byte UTF-8 needs utf8mb4 on MariaDB
    assert campaigns.save(name, {"note": "🚀"}) is True
    assert campaigns.load(name) == {"note": "🚀"}


def test_campaign_save_race(storage_url: str) -> None:
    """Many threads, each with its own database handle (own connections), save one name at
    once."""
    registries = [Database(storage_url) for _ in range(6)]
    barrier = threading.Barrier(len(registries))
    outcomes: list[bool] = []
    errors: list[BaseException] = []

    def save(index: int) -> None:
        try:
            barrier.wait()
            outcomes.append(registries[index].campaigns.save("shared", {"writer": index}))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(registries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert sorted(outcomes) == [False] * (len(registries) - 1) + [True]
        saved = registries[0].campaigns.load("shared")
        assert saved is not None and saved["writer"] in range(len(registries))
        assert registries[0].campaigns.names() == ["shared"]
    finally:
        for registry in registries:
            registry.close()
