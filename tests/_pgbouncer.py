"""PgBouncer in transaction pooling mode in front of the local PostgreSQL, for tests.

The runner is benchmarks/pgbouncer.py (the scale benchmark uses it too). Here its server pool
is smaller than the clients, so consecutive transactions of one client really do land on
different server connections: anything relying on session state breaks. A missing binary
skips the test, and fails it in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from benchmarks.pgbouncer import PgBouncerMissing
from benchmarks.pgbouncer import pgbouncer_in_front_of as _in_front_of

SERVER_POOL_SIZE = 2  # server connections per database, fewer than the clients use


@contextmanager
def pgbouncer_in_front_of(server_url: str, *, ignore_options: bool = True) -> Iterator[str]:
    """Start PgBouncer for `server_url`'s database; yields the same URL through PgBouncer
    (which refuses startup ``options`` unless `ignore_options`)."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(
                _in_front_of(
                    server_url, pool_size=SERVER_POOL_SIZE, ignore_options=ignore_options
                )
            )
        except PgBouncerMissing as e:
            if "CI" in os.environ:
                pytest.fail(f"{e} (CI is set, so the PgBouncer test must run)", pytrace=False)
            pytest.skip(str(e))
        yield url
