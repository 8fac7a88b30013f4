"""Shared fixtures: ``storage_url`` runs a test on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# pytest puts this directory on sys.path (tests/ is not a package), where tests/storage/ would
# shadow the real `storage` package as an empty namespace package. The repository root goes
# first, as with `python -m pytest` from it; tests/ stays importable for `_servers`.
_TESTS_DIR = str(Path(__file__).resolve().parent)
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[:1] != [_REPO_ROOT]:
    sys.path.insert(0, _REPO_ROOT)
if _TESTS_DIR not in sys.path:
    sys.path.append(_TESTS_DIR)

from _servers import (  # noqa: E402
    ServerKind,
    drop_server_database,
    make_server_database,
    require_server,
)

__all__ = ["drop_server_database", "make_server_database", "require_server"]

StartTogether = Callable[[Sequence[Sequence[str]]], list[Any]]


def _server_database(kind: ServerKind) -> Iterator[str]:
    require_server(kind)
    url = make_server_database(kind)
    try:
        yield url
    finally:
        drop_server_database(kind, url)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.server),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.server),
    ]
)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a temp SQLite file, or a new database on a local server."""
    kind: str = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'sweeps.db'}"
        return
    yield from _server_database("postgresql" if kind == "postgresql" else "mariadb")


@pytest.fixture(
    params=[
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.server),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.server),
    ]
)
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Like ``storage_url`` but servers only (for what SQLite cannot show)."""
    yield from _server_database(request.param)


@pytest.fixture
def start_together() -> StartTogether:
    """Run Python scripts as processes that start their real work at the same moment.

    Each script prints ``ready`` once it has imported what it needs, then waits for ``go`` on
    stdin, works, and prints its result as JSON on its last stdout line. A failing process fails
    the test with its stderr.
    """

    def run(commands: Sequence[Sequence[str]], timeout: float = 90) -> list[Any]:
        processes = [
            subprocess.Popen(
                [sys.executable, *command],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for command in commands
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                if process.stdout.readline().strip() != "ready":
                    _, stderr = process.communicate(timeout=timeout)
                    pytest.fail(f"worker died before it was ready:\n{stderr}")
            for process in processes:  # Released together: the race is real.
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            results = []
            for process in processes:
                stdout, stderr = process.communicate(timeout=timeout)
                if process.returncode != 0:
                    pytest.fail(f"worker exited with {process.returncode}:\n{stderr}")
                results.append(json.loads(stdout.strip().splitlines()[-1]))
            return results
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on `server_url` is a server test even where it narrows the fixture's servers
    (``parametrize("server_url", ["postgresql"], indirect=True)`` drops the params' marks)."""
    for item in items:
        if "server_url" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "server"
        ):
            item.add_marker(pytest.mark.server)
