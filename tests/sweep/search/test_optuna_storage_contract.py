"""Optuna's own storage test cases, run on the storage the sweep's workers use.

The cases come from the installed Optuna (`optuna.testing.pytest_storages.StorageTestCase`,
the suite Optuna ships for third-party storages), so they follow Optuna's version. They run on
`sweep.search.storage.optuna_storage(url)` bare and wrapped as `optuna.create_study` wraps it
(Optuna's `_CachedStorage`, through `optuna.storages.get_storage`), and on a plain
`RDBStorage` built with the same arguments as the reference, on SQLite, PostgreSQL and MariaDB.
Every case the reference passes must pass for ours.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import optuna
import pytest
from optuna.storages import BaseStorage
from optuna.testing.pytest_storages import StorageTestCase

from storage import Database, engine_options
from sweep.search.storage import SweepStorage, optuna_storage

if TYPE_CHECKING:
    from _servers import ServerKind

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

BACKENDS = ("sqlite", "postgresql", "mariadb")
# Ours bare and as `optuna.create_study` wraps it, on every case. The reference (a plain
# RDBStorage with the same arguments) runs where ours is allowed to fail: it must fail there
# too. Where ours passes, the reference is not needed for "every case it passes, ours passes"
# (CONTRACT_REFERENCE=all runs it on every case, e.g. after an Optuna upgrade, to find the
# cases it fails); skipping it there keeps this module to about half the time.
OURS = ("sweep", "sweep-cached")
REFERENCE = "rdb"
# The cases the reference fails, per backend: ours fails them too, for the same reason, and
# is held to them (strict: if the reference starts passing one, so must ours).
# Each entry: the case's name and a part of its parameters' id ("" for every one).
REFERENCE_FAILS: dict[str, dict[tuple[str, str], str]] = {
    "mariadb": dict.fromkeys(
        (
            ("test_create_new_trial", ""),
            ("test_create_new_trial_with_template_trial", "start_time0-complete_time0"),
            ("test_get_trial", ""),
            ("test_get_all_trials", ""),
        ),
        "Optuna's DATETIME columns hold whole seconds on MariaDB: a trial's start and end "
        "times lose their microseconds",
    )
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each case on each backend, for ours bare and cached, and for the reference where
    ours may fail."""
    if "target" not in metafunc.fixturenames:
        return
    everywhere = os.environ.get("CONTRACT_REFERENCE") == "all"
    targets = []
    for backend in BACKENDS:
        fails = {case for case, _ in REFERENCE_FAILS.get(backend, {})}
        kinds = OURS + ((REFERENCE,) if everywhere or metafunc.function.__name__ in fails else ())
        marks = [] if backend == "sqlite" else [pytest.mark.server]
        targets += [
            pytest.param((backend, kind), id=f"{backend}-{kind}", marks=marks) for kind in kinds
        ]
    metafunc.parametrize("target", targets)


class _Databases:
    """One database per backend for the whole module, made on first use (a fresh one per
    case would cost seconds each on the servers): every case starts from no studies."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[str, tuple[str, dict[str, optuna.storages.RDBStorage]]] = {}

    def storages(self, backend: str) -> dict[str, optuna.storages.RDBStorage]:
        if backend not in self.made:
            url = self._make(backend)
            ours = optuna_storage(Database(url))  # as the project builds it
            reference = optuna.storages.RDBStorage(
                ours.url,
                engine_kwargs=engine_options(url),
                heartbeat_interval=ours.heartbeat_interval,
                grace_period=ours.grace_period,
                heartbeat_stale_trial_callback=ours.heartbeat_stale_trial_callback,
            )
            self.made[backend] = (url, {"sweep": ours, REFERENCE: reference})
        return self.made[backend][1]

    def _make(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.folder / 'sweeps.db'}"
        from _servers import make_server_database, require_server

        kind = cast("ServerKind", backend)
        require_server(kind)
        return make_server_database(kind)

    def close(self) -> None:
        from _servers import drop_server_database

        for backend, (url, storages) in self.made.items():
            for storage in storages.values():
                storage.engine.dispose()
            if backend != "sqlite":
                drop_server_database(cast("ServerKind", backend), url)


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Databases]:
    # SQLite in memory where the system has it: the cases test the contract, not the disk,
    # and a commit's fsync would double that backend's time.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(
        dir=shm if shm.is_dir() else tmp_path_factory.getbasetemp(), prefix="sweep-contract-"
    ) as folder:
        made = _Databases(Path(folder))
        try:
            yield made
        finally:
            made.close()


@pytest.fixture
def storage(
    request: pytest.FixtureRequest, target: tuple[str, str], databases: _Databases
) -> BaseStorage:
    backend_name, kind = target
    node = request.node
    for (case, params), reason in REFERENCE_FAILS.get(backend_name, {}).items():
        if node.originalname == case and params in node.name:
            node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    backend = databases.storages(backend_name)[kind.split("-")[0]]
    assert isinstance(backend, SweepStorage) == kind.startswith("sweep")
    wrapped = optuna.storages.get_storage(backend) if kind.endswith("cached") else backend
    # Every case starts from no studies (the previous case's are deleted here, not after it:
    # one clean-up per case, and a failed case leaves its studies to look at until the next).
    for study in wrapped.get_all_studies():
        wrapped.delete_study(study._study_id)
    return wrapped


class TestOptunaStorageContract(StorageTestCase):
    """Every case of Optuna's `StorageTestCase`, on each backend and kind above."""


def test_the_cases_are_optunas_own(tmp_path: Path) -> None:
    """The class above adds nothing: the cases are exactly the installed Optuna's."""
    own = {name for name in vars(TestOptunaStorageContract) if name.startswith("test_")}
    shipped = {name for name in dir(StorageTestCase) if name.startswith("test_")}
    assert not own and len(shipped) >= 40
