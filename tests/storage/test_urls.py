"""Storage URLs: resolution order, normalisation, refusals with hints, and masking."""

from __future__ import annotations

import pytest

from storage import (
    DEFAULT_STORAGE_URL,
    InvalidStorageURL,
    dialect_of,
    mask_url,
    normalize_storage_url,
    resolve_storage_url,
)

SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///sweeps.db", "sqlite:///sweeps.db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite://", "sqlite://"),
        ("postgresql://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"),
        ("postgresql+psycopg://u:pw@h:5433/db", "postgresql+psycopg://u:pw@h:5433/db"),
        ("mysql://u:pw@h/db", "mysql+pymysql://u:pw@h/db"),
        ("mariadb://u:pw@h:3306/db", "mysql+pymysql://u:pw@h:3306/db"),
        ("mariadb+pymysql://u@h/db", "mysql+pymysql://u@h/db"),
        ("mysql+pymysql://u:pw@h/db?charset=utf8mb4", "mysql+pymysql://u:pw@h/db?charset=utf8mb4"),
        # A password with URL-special characters survives (it is used to connect).
        ("postgresql://u:p%40ss%2Fw@h/db", "postgresql+psycopg://u:p%40ss%2Fw@h/db"),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_storage_url(given) == expected
    assert normalize_storage_url(expected) == expected  # Normalising is idempotent.


@pytest.mark.parametrize("path", ["sweeps.db", "/tmp/x.db", "data/sweeps.sqlite"])
def test_bare_path_gets_a_sqlite_hint(path: str) -> None:
    with pytest.raises(InvalidStorageURL) as info:
        normalize_storage_url(path)
    message = str(info.value)
    assert f"sqlite:///{path}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    ["redis://h:6379/0", "postgresql+psycopg2://u@h/db", "mysql+mysqldb://u@h/db", "oracle://h/x"],
)
def test_unsupported_scheme_lists_the_allowed_ones(url: str) -> None:
    with pytest.raises(InvalidStorageURL) as info:
        normalize_storage_url(url)
    message = str(info.value)
    assert "unsupported" in message
    for allowed in ("sqlite:///PATH", "postgresql", "mysql", "mariadb"):
        assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize("url", ["postgresql://u:pw@h", "mysql://u:pw@h:3306/", "mariadb://h"])
def test_server_url_needs_a_database(url: str) -> None:
    with pytest.raises(InvalidStorageURL, match="names no database"):
        normalize_storage_url(url)


@pytest.mark.parametrize("url", ["", "   ", "://", "postgresql://u:pw@h:notaport/db"])
def test_unparseable(url: str) -> None:
    with pytest.raises(InvalidStorageURL):
        normalize_storage_url(url)


def test_sqlite_with_a_host_is_refused() -> None:
    with pytest.raises(InvalidStorageURL, match="must not name a host"):
        normalize_storage_url("sqlite://somehost/x.db")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://alice:{SECRET}@h/db",
        f"postgresql://alice:{SECRET}@h",  # no database
        f"redis://alice:{SECRET}@h/0",  # unsupported
        f"postgresql://alice:{SECRET}@h:notaport/db",  # unparseable port
        f"postgresql+psycopg2://alice:{SECRET}@h/db",  # driver not installed
        f"sqlite://alice:{SECRET}@h/x.db",
        f"postgresql://alice@h/db?password={SECRET}",
    ],
)
def test_password_never_in_messages(url: str) -> None:
    try:
        normalize_storage_url(url)
    except InvalidStorageURL as e:
        assert SECRET not in str(e)
        assert "\n" not in str(e)
    assert SECRET not in mask_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql+psycopg://u:{SECRET}@h/db", "postgresql+psycopg://u:***@h/db"),
        (f"mysql+pymysql://root:{SECRET}@h:3306/db", "mysql+pymysql://root:***@h:3306/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        (f"postgresql://u@h/db?password={SECRET}&sslmode=require", None),
        (f"weird://u:{SECRET}@h:port/x", "weird://***"),  # unparseable: only the scheme
        ("sweeps.db", "sweeps.db"),  # nothing secret in a bare path
        (f"u:{SECRET}@h", "***"),
    ],
)
def test_mask_url(url: str, expected: str | None) -> None:
    masked = mask_url(url)
    assert SECRET not in masked
    if expected is not None:
        assert masked == expected
    else:
        assert "password=***" in masked
        assert "sslmode=require" in masked


def test_mask_url_never_raises() -> None:
    for value in ["", "://", "%%%", "a" * 10_000, "\x00"]:
        assert isinstance(mask_url(value), str)


def test_resolve_order() -> None:
    configured = "postgresql://u:pw@envhost/db"
    assert resolve_storage_url("mysql://u@clihost/db", configured).text == "mysql+pymysql://u@clihost/db"
    assert resolve_storage_url(None, configured).text == "postgresql+psycopg://u:pw@envhost/db"
    assert resolve_storage_url(None, None).text == DEFAULT_STORAGE_URL
    assert resolve_storage_url("", "  ").text == DEFAULT_STORAGE_URL


def test_a_bad_configured_url_is_refused_by_name() -> None:
    with pytest.raises(InvalidStorageURL, match=r"sqlite:///from-env\.db"):
        resolve_storage_url(None, "from-env.db")


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("sqlite:///x.db", "sqlite"),
        ("postgresql://h/db", "postgresql"),
        ("postgresql+psycopg://h/db", "postgresql"),
        ("mysql://h/db", "mysql"),
        ("mariadb+pymysql://h/db", "mysql"),
    ],
)
def test_dialect_of(url: str, dialect: str) -> None:
    assert dialect_of(url) == dialect
