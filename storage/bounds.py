"""Network bounds derived from the patience: how long any wait on a server may last.

A silent network (packets dropped, no reset) leaves a blocking read waiting for the kernel's
own limits, 15 minutes and more, and a server keeps a vanished client's session (and the
locks of its open transaction) for the two hours of its default TCP keepalive. Every bound
here derives from one figure, the patience (how long a worker rides out a lost database), so
a lost network is noticed well within it and a dead holder's lock is freed within a minute:

- the client notices a silent network within `NetworkBounds.detect_seconds` (TCP keepalive
  while it waits for an answer, a TCP user timeout while its own data is unacknowledged);
- the server notices a vanished client as fast (its own keepalive per session), and ends a
  transaction left idle for `idle_seconds` (a frozen holder's lock);
- no statement, and no wait for a row lock, lasts longer than the patience.

A key the user gives in the URL's query (``?keepalives_idle=60``, ``?read_timeout=30``,
``?options=...``) wins over the value derived here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_PATIENCE_SECONDS", "NetworkBounds", "refuses_startup_options"]

DEFAULT_PATIENCE_SECONDS = 120.0
_KEEPALIVE_PROBES = 3


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


@dataclass(frozen=True)
class NetworkBounds:
    """The timeouts of every connection to a server, from the patience (seconds)."""

    patience: float = DEFAULT_PATIENCE_SECONDS

    @property
    def detect_seconds(self) -> int:
        """How long a silent network goes unnoticed: a quarter of the patience, 5 to 30 s."""
        return round(_clamp(self.patience / 4, 5, 30))

    @property
    def connect_seconds(self) -> int:
        """The connect timeout: a quarter of the patience, 2 to 10 s (libpq's floor is 2)."""
        return math.ceil(_clamp(self.patience / 4, 2, 10))

    @property
    def keepalive(self) -> tuple[int, int, int]:
        """(idle, interval, count): the first probe after half of `detect_seconds`, the
        connection dropped after `detect_seconds` without an answer."""
        detect = self.detect_seconds
        idle = max(1, detect // 2)
        interval = max(1, (detect - idle) // _KEEPALIVE_PROBES)
        return idle, interval, _KEEPALIVE_PROBES

    @property
    def statement_seconds(self) -> int:
        """No statement, and no wait for a row lock, lasts longer than the patience."""
        return max(1, math.ceil(self.patience))

    @property
    def idle_seconds(self) -> int:
        """How long a server keeps a session idle inside a transaction (PostgreSQL) or idle
        at all (MariaDB's ``wait_timeout``): half the patience, 5 to 60 s. A live holder is
        idle for milliseconds; a frozen one (SIGSTOP) answers TCP keepalives, so only this
        ends its locks."""
        return round(_clamp(self.patience / 2, 5, 60))

    def postgresql_options(self) -> str:
        """The server-side bounds as libpq's startup ``options`` (one session's settings)."""
        idle, interval, count = self.keepalive
        settings = {
            "tcp_keepalives_idle": idle,
            "tcp_keepalives_interval": interval,
            "tcp_keepalives_count": count,
            "tcp_user_timeout": self.detect_seconds * 1000,
            "statement_timeout": self.statement_seconds * 1000,
            "lock_timeout": self.statement_seconds * 1000,
            "idle_in_transaction_session_timeout": self.idle_seconds * 1000,
        }
        return " ".join(f"-c {name}={value}" for name, value in settings.items())

    def postgresql_connect_args(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """psycopg's connection keywords, leaving out those the URL's query sets."""
        idle, interval, count = self.keepalive
        derived: dict[str, Any] = {
            "connect_timeout": self.connect_seconds,
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": interval,
            "keepalives_count": count,
            "tcp_user_timeout": self.detect_seconds * 1000,
            "options": self.postgresql_options(),
        }
        return {key: value for key, value in derived.items() if key not in query}

    def mysql_connect_args(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """PyMySQL's connection keywords, leaving out those the URL's query sets.

        A read waits at most the patience (no statement runs longer, ``max_statement_time``);
        the server closes a session idle for `idle_seconds` (GET_LOCK's lock is the
        session's, so this frees a vanished or frozen holder's lock; the pool's pre-ping
        replaces a connection closed that way).
        """
        seconds = self.statement_seconds
        derived: dict[str, Any] = {
            "connect_timeout": self.connect_seconds,
            "read_timeout": seconds,
            "write_timeout": seconds,
            "init_command": (
                f"SET SESSION max_statement_time = {seconds}, "
                f"innodb_lock_wait_timeout = {seconds}, wait_timeout = {self.idle_seconds}"
            ),
        }
        return {key: value for key, value in derived.items() if key not in query}


def refuses_startup_options(error: BaseException) -> bool:
    """The server refused libpq's startup ``options`` (PgBouncer does, unless it is told to
    ignore them): the session's bounds must then come from the pooler's own settings."""
    return "unsupported startup parameter" in str(error)
