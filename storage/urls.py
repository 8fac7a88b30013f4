"""Parse, validate, normalise and mask storage URLs.

Every command resolves its storage the same way (CLI flag > ``SWEEP_STORAGE`` > SQLite default),
and every message that shows a URL shows it through `mask_url`, so a password never reaches a
terminal or a log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from storage.errors import InvalidStorageURL

__all__ = [
    "DEFAULT_STORAGE_URL",
    "Dialect",
    "StorageURL",
    "as_storage_url",
    "dialect_of",
    "mask_url",
    "normalize_storage_url",
    "parse_storage_url",
    "redact_password",
    "resolve_storage_url",
    "sqlite_file",
]

DEFAULT_STORAGE_URL = "sqlite:///sweeps.db"

Dialect = Literal["sqlite", "postgresql", "mysql"]

# (backend, driver or None) -> (dialect, the drivername we connect with). Only drivers that are
# installed are accepted: psycopg2 and mysqlclient would fail later with an ImportError.
_DRIVERS: dict[tuple[str, str | None], tuple[Dialect, str]] = {
    ("sqlite", None): ("sqlite", "sqlite"),
    ("sqlite", "pysqlite"): ("sqlite", "sqlite"),
    ("postgresql", None): ("postgresql", "postgresql+psycopg"),
    ("postgresql", "psycopg"): ("postgresql", "postgresql+psycopg"),
    ("mysql", None): ("mysql", "mysql+pymysql"),
    ("mysql", "pymysql"): ("mysql", "mysql+pymysql"),
    ("mariadb", None): ("mysql", "mysql+pymysql"),
    ("mariadb", "pymysql"): ("mysql", "mysql+pymysql"),
}
_ALLOWED = (
    "sqlite:///PATH, sqlite:///:memory:, postgresql[+psycopg]://USER:PASSWORD@HOST/DB, "
    "mysql[+pymysql]://USER:PASSWORD@HOST/DB, mariadb[+pymysql]://USER:PASSWORD@HOST/DB"
)
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd"})
_MASK = "***"


@dataclass(frozen=True, repr=False)
class StorageURL:
    """A storage URL parsed, validated and normalised once, at the boundary.

    Everything below the boundary takes this value, never the string: what the engine, the
    locks, the messages and Optuna need is read off it without parsing again.
    """

    text: str
    """The normalised URL, password intact: for connecting only, never for display."""
    parsed: URL
    """SQLAlchemy's form of `text` (handed to `sqlalchemy.create_engine` as it is)."""
    dialect: Dialect
    masked: str
    """The URL with any password replaced by ``***``: for messages and logs."""

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite URL; None for in-memory or server URLs."""
        return sqlite_file(self.parsed)

    @property
    def password(self) -> str | None:
        return None if self.parsed.password is None else str(self.parsed.password)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"StorageURL({self.masked!r})"


def sqlite_file(parsed: URL) -> Path | None:
    """The database file of a parsed SQLite URL (an engine's ``url`` too, unparsed again);
    None for in-memory databases and servers."""
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def parse_storage_url(url: str) -> StorageURL:
    """Validate a storage URL and spell it with the driver we actually use: the one parse.

    ``postgresql://`` becomes ``postgresql+psycopg://``; ``mysql://``, ``mariadb://`` and
    ``mariadb+pymysql://`` become ``mysql+pymysql://``; SQLite URLs are kept as given.

    Raises:
        InvalidStorageURL: Unparseable, a bare file path, an unsupported scheme or driver, or a
            server URL without a database name.
    """
    parsed = _parse(url)
    dialect, drivername = _classify(parsed, url)
    if dialect == "sqlite":
        if parsed.host or parsed.username or parsed.password is not None:
            raise InvalidStorageURL(
                f"SQLite URL {mask_url(url)!r} must not name a host or user; "
                "use sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH."
            )
        text = url.strip()
    else:
        if not parsed.database:
            raise InvalidStorageURL(
                f"storage URL {mask_url(url)!r} names no database; "
                f"add one after the host, e.g. {drivername}://USER:PASSWORD@HOST/DBNAME."
            )
        parsed = parsed.set(drivername=drivername)
        text = parsed.render_as_string(hide_password=False)
    return StorageURL(text=text, parsed=parsed, dialect=dialect, masked=_masked(parsed, text))


def as_storage_url(url: StorageURL | str) -> StorageURL:
    """`url` itself, or a string parsed (for callers outside the sweep, e.g. a notebook)."""
    return url if isinstance(url, StorageURL) else parse_storage_url(url)


def resolve_storage_url(cli_value: str | None, configured: str | None = None) -> StorageURL:
    """Pick the storage URL: the CLI value, else the configured one, else the SQLite default.

    Args:
        cli_value: The ``--storage`` flag, or None when it was not given.
        configured: The deployment's URL (the sweep passes ``$SWEEP_STORAGE``), or None.

    Raises:
        InvalidStorageURL: The chosen URL is malformed or names an unsupported database.
    """
    for value in (cli_value, configured):
        if value is not None and value.strip():
            return parse_storage_url(value)
    return parse_storage_url(DEFAULT_STORAGE_URL)


def normalize_storage_url(url: str) -> str:
    """The normalised spelling of a storage URL (`parse_storage_url`'s ``text``).

    Raises:
        InvalidStorageURL: As `parse_storage_url`.
    """
    return parse_storage_url(url).text


def dialect_of(url: str) -> Dialect:
    """Return which SQL dialect a storage URL talks to (MariaDB counts as ``mysql``).

    Raises:
        InvalidStorageURL: As `normalize_storage_url`.
    """
    return _classify(_parse(url), url)[0]


def mask_url(url: str) -> str:
    """Return the URL with any password replaced by ``***``; never raises.

    Passwords given as query parameters (``?password=...``) are masked too, and so is a
    password holding an unescaped ``@`` (everything up to the last ``@`` before the host).
    A URL without a secret is shown as given (``sqlite:///:memory:`` stays readable). A string
    that cannot be parsed is reduced to its scheme, because we cannot tell where its password
    is.
    """
    try:
        text = _without_at_password(url.strip())
        return _masked(make_url(text), text)
    except Exception:
        # Deliberately broad: this runs inside error handling and must not raise itself.
        pass
    text = str(url)
    if "://" in text:
        return text.split("://", 1)[0] + "://" + _MASK
    if "@" in text or ":" in text:
        return _MASK
    return text  # A bare path has nothing secret in it, and showing it helps.


def _masked(parsed: URL, text: str) -> str:
    """`mask_url` of a URL already parsed (and so without an ``@`` in its password)."""
    secret_query = any(key.lower() in _SECRET_QUERY_KEYS for key in parsed.query)
    if parsed.password is None and not secret_query:
        return text
    if secret_query:
        query = {
            key: (_MASK if key.lower() in _SECRET_QUERY_KEYS else value)
            for key, value in parsed.query.items()
        }
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", _MASK)


def _authority_split(text: str) -> tuple[str, str, str] | None:
    """(scheme://, user-info, @host...) when the part before the query holds more than one
    ``@``: a password with an unescaped ``@`` (the last one ends the user-info)."""
    if "://" not in text:
        return None
    head, rest = text.split("://", 1)
    main = rest.split("?", 1)[0]
    if main.count("@") < 2:
        return None
    cut = main.rindex("@")
    return f"{head}://", rest[:cut], rest[cut:]


def _without_at_password(text: str) -> str:
    split = _authority_split(text)
    if split is None:
        return text
    head, userinfo, tail = split
    user = userinfo.split(":", 1)[0]
    return f"{head}{user}:{_MASK}{tail}" if ":" in userinfo else f"{head}{_MASK}{tail}"


def _parse(url: str) -> URL:
    """Parse with SQLAlchemy, turning its errors into a one-line InvalidStorageURL."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidStorageURL(f"storage URL must be a non-empty string; allowed: {_ALLOWED}.")
    text = url.strip()
    if _authority_split(text) is not None:
        raise InvalidStorageURL(
            f"storage URL {mask_url(text)!r} has an '@' in its user name or password; "
            "percent-encode it as %40 (e.g. postgresql://USER:my%40secret@HOST/DB)."
        )
    if "://" not in text:
        raise InvalidStorageURL(
            f"storage URL {mask_url(text)!r} looks like a file path, not a URL; "
            f"use sqlite:///{text} (sqlite:///PATH)."
        )
    try:
        return make_url(text)
    except (ArgumentError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidStorageURL(
            f"cannot parse storage URL {mask_url(text)!r} ({redact_password(reason, text)}); "
            f"allowed: {_ALLOWED}."
        ) from None


def _classify(parsed: URL, original: str) -> tuple[Dialect, str]:
    """Map a parsed URL to (dialect, drivername) or refuse it naming what is allowed."""
    backend, _, driver = parsed.drivername.partition("+")
    key = (backend.lower(), driver.lower() or None)
    if key not in _DRIVERS:
        raise InvalidStorageURL(
            f"unsupported storage URL scheme {parsed.drivername!r} in {mask_url(original)!r}; "
            f"allowed: {_ALLOWED}."
        )
    return _DRIVERS[key]


def redact_password(text: str, url: str) -> str:
    """Remove the URL's password from a message that might echo it (defence in depth)."""
    secrets: list[str] = []
    split = _authority_split(url.strip())
    if split is not None and ":" in split[1]:
        secrets.append(split[1].split(":", 1)[1])
    try:
        parsed = make_url(url.strip())
        secrets.append(str(parsed.password or ""))
        for key, value in parsed.query.items():  # ?password=... too
            if key.lower() in _SECRET_QUERY_KEYS:
                secrets += [value] if isinstance(value, str) else list(value)
    except Exception:
        match = re.search(r"://[^/@:]*:([^@]*)@", url)
        secrets.append(match.group(1) if match else "")
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return text
