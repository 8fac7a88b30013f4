"""Every ``SWEEP_*`` environment variable, typed and checked, read in one place.

The CLI reads them once per command (`refresh`); library code asks `current()`, which reads them
on first use. A value that does not parse is a `ConfigError` naming the variable and what it
accepts, never a silent default: a typo in a deployment should be seen, not guessed around.
Values that each parse but contradict each other (a grace period too short for the heartbeat
interval) are refused the same way, naming both.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from sweep.errors import ConfigError

__all__ = [
    "VARIABLES", "ArtifactPlace", "S3Location", "Settings", "current", "parse_artifact_place",
    "refresh",
]

# name -> (Settings field, one-line description for README and --help).
VARIABLES: dict[str, tuple[str, str]] = {
    "SWEEP_STORAGE": ("storage", "database URL when --storage is not given"),
    "SWEEP_CAMPAIGN": ("campaign", "campaign name when --campaign is not given"),
    "SWEEP_ARTIFACTS": (
        "artifacts", "where the sweep and the dashboard keep artifacts: a shared folder, or "
        "s3://BUCKET/PREFIX"
    ),
    "SWEEP_DATABASE_PATIENCE": (
        "database_patience", "seconds a worker rides out a lost database (default 120)"
    ),
    "SWEEP_HEARTBEAT_INTERVAL": (
        "heartbeat_interval", "seconds between a running trial's heartbeats (default 10)"
    ),
    "SWEEP_GRACE_PERIOD": (
        "grace_period", "seconds without a heartbeat before a trial is failed and retried "
        "(default 30)"
    ),
    "SWEEP_PIN_WORKERS": ("pin_workers", "0 leaves `run --workers K` workers unpinned"),
    "SWEEP_WORKERS": ("workers", "set by `run --workers K` for its workers: K"),
    "SWEEP_WORKER_CORE": ("worker_core", "set by `run --workers K`: the core of this worker"),
    "SWEEP_PARENT_PID": ("parent_pid", "set by `run --workers K`: the parent to exit with"),
    "SWEEP_TF_VERBOSE": ("tf_verbose", "1 shows TensorFlow's start-up messages"),
}

DEFAULT_ARTIFACT_DIR = "sweep-artifacts"
_MAX_SECONDS = 7 * 24 * 3600.0
_MAX_PLACE_CHARS = 1024


@dataclass(frozen=True)
class S3Location:
    """``s3://BUCKET/PREFIX``: artifacts kept in an S3-compatible bucket, under a key prefix."""

    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


# Where artifacts are kept: a folder (shared by volume) or a bucket (shared by the network).
ArtifactPlace = Path | S3Location

# S3's own rule for bucket names (lower case, 3-63 characters, no leading or trailing dot or
# hyphen); a prefix is any printable text without "//" that S3 keys allow.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_ALLOWED_PLACES = "give a folder or s3://BUCKET/PREFIX"


def parse_artifact_place(text: str, what: str) -> ArtifactPlace:
    """A folder, or ``s3://BUCKET/PREFIX``; `what` names the source in the error.

    Raises:
        ConfigError: an unknown scheme, an ``s3://`` with no valid bucket, a prefix S3 cannot
            take, or a value over 1,024 characters.
    """
    if len(text) > _MAX_PLACE_CHARS or not text.isprintable():
        raise ConfigError(
            f"{what}={_show(text)} is not allowed; {_ALLOWED_PLACES} (printable, at most "
            f"{_MAX_PLACE_CHARS} characters)"
        )
    scheme = _SCHEME.match(text)
    if scheme is None:
        return Path(text)
    if scheme.group(1).lower() != "s3":
        raise ConfigError(
            f"{what}={_show(text)}: scheme {scheme.group(1)!r} is not supported; "
            f"{_ALLOWED_PLACES}"
        )
    bucket, _, prefix = text[scheme.end():].partition("/")
    if not bucket:
        raise ConfigError(f"{what}={_show(text)} names no bucket; {_ALLOWED_PLACES}")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"{what}={_show(text)}: {bucket[:63]!r} is not an S3 bucket name (3-63 lower-case "
            "letters, digits, '.' or '-', starting and ending with a letter or digit)"
        )
    prefix = prefix.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise ConfigError(
            f"{what}={_show(text)}: the prefix {_show(prefix)} has an empty, '.' or '..' "
            "part; give s3://BUCKET/a/b"
        )
    return S3Location(bucket, prefix)


@dataclass(frozen=True)
class Settings:
    """The environment's settings; every field has the value the sweep uses."""

    storage: str | None = None
    campaign: str | None = None
    artifacts: ArtifactPlace = Path(DEFAULT_ARTIFACT_DIR)
    database_patience: float = 120.0
    heartbeat_interval: int = 10
    grace_period: int = 30
    pin_workers: bool = True
    workers: int = 1
    worker_core: int | None = None
    parent_pid: int | None = None
    tf_verbose: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse the ``SWEEP_*`` variables of `environ` (``os.environ`` when None).

        Raises:
            ConfigError: a variable is set to a value it does not accept, or two contradict
                each other.
        """
        env = os.environ if environ is None else environ

        def raw(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        values: dict[str, object] = {}
        if (storage := env.get("SWEEP_STORAGE")) is not None and storage.strip():
            values["storage"] = storage
        if (campaign := env.get("SWEEP_CAMPAIGN")) is not None and campaign.strip():
            values["campaign"] = campaign  # verbatim: the name check refuses "abc\n"
        if (artifacts := raw("SWEEP_ARTIFACTS")) is not None:
            values["artifacts"] = parse_artifact_place(artifacts, "SWEEP_ARTIFACTS")
        if (text := raw("SWEEP_DATABASE_PATIENCE")) is not None:
            values["database_patience"] = _seconds("SWEEP_DATABASE_PATIENCE", text)
        for name, key in (
            ("SWEEP_HEARTBEAT_INTERVAL", "heartbeat_interval"),
            ("SWEEP_GRACE_PERIOD", "grace_period"),
        ):
            if (text := raw(name)) is not None:
                values[key] = _integer(name, text, minimum=1, maximum=int(_MAX_SECONDS))
        if (text := raw("SWEEP_PIN_WORKERS")) is not None:
            values["pin_workers"] = _flag("SWEEP_PIN_WORKERS", text)
        if (text := raw("SWEEP_WORKERS")) is not None:
            values["workers"] = _integer("SWEEP_WORKERS", text, minimum=1, maximum=4096)
        if (text := raw("SWEEP_WORKER_CORE")) is not None:
            values["worker_core"] = _integer("SWEEP_WORKER_CORE", text, minimum=0, maximum=65535)
        if (text := raw("SWEEP_PARENT_PID")) is not None:
            values["parent_pid"] = _integer("SWEEP_PARENT_PID", text, minimum=1, maximum=2**31)
        if (text := raw("SWEEP_TF_VERBOSE")) is not None:
            values["tf_verbose"] = _flag("SWEEP_TF_VERBOSE", text)
        parsed = cls(**values)  # type: ignore[arg-type]
        given = {name: text for name in VARIABLES if (text := raw(name)) is not None}
        parsed._check_together(given)
        return parsed

    def _check_together(self, given: Mapping[str, str]) -> None:
        """Refuse settings that are valid alone but contradict each other.

        Args:
            given: The variables set in the environment, as given (the others are defaults).

        Raises:
            ConfigError: the first contradiction, naming both variables and what is allowed.
        """

        def shown(name: str) -> str:
            if name in given:
                return f"{name}={_show(given[name])}"
            return f"{name}={getattr(self, VARIABLES[name][0])} (the default)"

        # Optuna fails a RUNNING trial whose last heartbeat is older than the grace period, and
        # a live worker beats only every interval (plus the time the write takes): under two
        # intervals, one late beat gets a live trial failed by another worker. Two intervals is
        # Optuna's own default grace period.
        if self.grace_period < 2 * self.heartbeat_interval:
            raise ConfigError(
                f"{shown('SWEEP_GRACE_PERIOD')} is less than twice "
                f"{shown('SWEEP_HEARTBEAT_INTERVAL')}: workers would fail each other's live "
                f"trials as stale; give a grace period of at least "
                f"{2 * self.heartbeat_interval} s (two heartbeat intervals), or a shorter interval"
            )
        # `run --workers K` assigns cores only when pinning is on; a core given by hand with
        # pinning turned off asks for both at once.
        if self.worker_core is not None and not self.pin_workers:
            raise ConfigError(
                f"{shown('SWEEP_WORKER_CORE')} pins this worker to a core but "
                f"{shown('SWEEP_PIN_WORKERS')} turns pinning off; unset one of them"
            )


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= _MAX_SECONDS:
        raise ConfigError(
            f"{name}={_show(text)} is not allowed; give a number of seconds in (0, "
            f"{_MAX_SECONDS:g}]"
        )
    return value


def _integer(name: str, text: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise ConfigError(
            f"{name}={_show(text)} is not allowed; give an integer from {minimum} to {maximum}"
        )
    return value


def _flag(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={_show(text)} is not allowed; give 1 or 0")


_current: Settings | None = None


def current() -> Settings:
    """The settings of this process, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_environment()
    return _current


def refresh(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment again (each CLI command starts here)."""
    global _current
    _current = Settings.from_environment(environ)
    return _current


assert {key for key, _ in VARIABLES.values()} == {f.name for f in fields(Settings)}
