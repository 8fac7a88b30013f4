"""The database handle: one parse of the URL, one engine, and what it hands out on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

import storage.urls
from storage import (
    CampaignConflict,
    Database,
    InvalidStorageURL,
    StorageUnavailable,
    create_engine,
)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every URL string the storage layer parses (validation, masking or redaction)."""
    seen: list[str] = []
    real = storage.urls.make_url

    def counting(text: str) -> sqlalchemy.URL:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(storage.urls, "make_url", counting)
    yield seen


def test_the_url_is_parsed_once_and_the_engine_made_on_first_use(
    storage_url: str, parses: list[str]
) -> None:
    with Database(storage_url) as database:
        assert len(parses) == 1
        assert database.dialect in ("sqlite", "postgresql", "mysql")
        assert "***" in database.masked or database.url.password is None
        assert database._engine is None  # nothing connected yet
        engine = database.engine
        assert database.engine is engine
        # The registry, the campaign rows and the locks work through that one engine.
        assert database.registry.engine is engine
        assert database.campaigns.register("arith", lambda stored: {"trials": 3}) == {
            "trials": 3
        }
        assert database.campaigns.load("arith") == {"trials": 3}
        assert database.campaigns.names() == ["arith"]
        with database.lock("some-slot") as lock:
            assert lock.engine is engine and lock.held
        assert database.registry.best_all("arith") == []
    assert len(parses) == 1, parses


def test_close_releases_the_engine_and_the_handle_opens_again(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'a.db'}")
    first = database.engine
    database.close()
    database.close()  # idempotent
    assert database._engine is None
    assert database.engine is not first
    database.close()


def test_a_shared_engine_is_for_servers_only(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'a.db'}")
    other = create_engine(database.url)
    try:
        with pytest.raises(ValueError, match="not SQLite"):
            database.share_engine(other)
    finally:
        other.dispose()


@pytest.mark.server
def test_a_server_handle_works_through_the_shared_engine(server_url: str) -> None:
    database = Database(server_url)
    lent = create_engine(database.url)
    try:
        database.share_engine(lent)
        assert database.registry.engine is lent
        with pytest.raises(ValueError, match="already open"):
            database.share_engine(create_engine(database.url))
        database.close()  # the lender disposes its engine, not the handle
        with lent.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        lent.dispose()


def test_resolve_takes_the_flag_then_the_configured_url_then_the_default(
    tmp_path: Path,
) -> None:
    flag = f"sqlite:///{tmp_path / 'flag.db'}"
    configured = f"sqlite:///{tmp_path / 'env.db'}"
    assert Database.resolve(flag, configured).url.text == flag
    assert Database.resolve(None, configured).url.text == configured
    assert Database.resolve(" ", None).url.text == "sqlite:///sweeps.db"
    with pytest.raises(InvalidStorageURL, match="looks like a file path"):
        Database.resolve("sweeps.db")


def test_a_password_never_shows_in_the_handle(parses: list[str]) -> None:
    database = Database("postgresql://user:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in repr(database) + str(database.url) + database.masked
    assert database.url.text == "postgresql+psycopg://user:s3cret@127.0.0.1:1/db"


def test_a_missing_sqlite_folder_is_one_line_at_first_use(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'missing' / 'a.db'}")  # parsing connects to nothing
    with pytest.raises(StorageUnavailable, match="does not exist"):
        database.engine  # noqa: B018
    assert not (tmp_path / "missing").exists()


def test_campaign_rows_refuse_a_name_that_differs_only_by_case(storage_url: str) -> None:
    with Database(storage_url) as database:
        database.campaigns.register("Arith", lambda stored: {})
        with pytest.raises(CampaignConflict, match="only by case"):
            database.campaigns.register("arith", lambda stored: {})
