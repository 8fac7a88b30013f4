"""Named locks: one holder at a time across engines (as across processes and hosts), taken by
waiting or only if free, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from storage.engine import create_engine
from storage.errors import StorageUnavailable
from storage.locks import NamedLock


@pytest.fixture
def engines(storage_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database: two workers' views of it."""
    pair = (create_engine(storage_url), create_engine(storage_url))
    yield pair
    for engine in pair:
        engine.dispose()


def test_a_held_lock_is_refused_without_waiting_then_free_once_released(
    engines: tuple[Engine, Engine],
) -> None:
    mine, theirs = engines
    holder = NamedLock(mine, "add:slots")
    holder.acquire()
    contender = NamedLock(theirs, "add:slots")
    started = time.monotonic()
    assert contender.try_acquire() is False and not contender.held
    assert time.monotonic() - started < 1.0  # MySQL's GET_LOCK(name, 1) would wait 1 s
    contender.release()  # never taken: releasing is harmless
    assert NamedLock(theirs, "multiply:slots").try_acquire()  # another name is another lock

    holder.release()
    assert contender.try_acquire() and contender.held
    assert NamedLock(mine, "add:slots", timeout=0.5).try_acquire() is False
    contender.release()
    assert holder.try_acquire()
    holder.release()


def test_a_waiter_gets_the_lock_the_moment_it_is_released(
    engines: tuple[Engine, Engine],
) -> None:
    mine, theirs = engines
    holder = NamedLock(mine, "add:slots")
    assert holder.try_acquire()
    got: list[float] = []

    def wait() -> None:
        with NamedLock(theirs, "add:slots", timeout=30):
            got.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    assert not got
    released = time.monotonic()
    holder.release()
    waiter.join(30)
    assert got and got[0] - released < 2.0


def test_waiting_past_the_timeout_says_which_lock(engines: tuple[Engine, Engine]) -> None:
    mine, theirs = engines
    with (
        NamedLock(mine, "add:slots"),
        pytest.raises(StorageUnavailable, match="could not take lock 'add:slots'"),
    ):
        NamedLock(theirs, "add:slots", timeout=0.3).acquire()


@pytest.mark.slow  # waits for the server's idle timeout (5 s at this patience)
@pytest.mark.server
def test_a_frozen_holders_lock_is_freed_by_the_server(server_url: str) -> None:
    """A holder that stops (SIGSTOP, a hung host) still answers TCP keepalives: the server's
    idle timeout ends its session, and its lock with it (it used to wait for the holder)."""
    patience = 10.0
    holders, waiters = create_engine(server_url, patience), create_engine(server_url, patience)
    try:
        holder = NamedLock(holders, "add:slots")
        holder.acquire()  # and never a statement after: frozen
        started = time.monotonic()
        with NamedLock(waiters, "add:slots", timeout=60):
            waited = time.monotonic() - started
        assert waited < 30, waited  # the idle timeout is 5 s; generous for a loaded machine
        holder.release()  # its session is gone: releasing says nothing and raises nothing
    finally:
        holders.dispose()
        waiters.dispose()
