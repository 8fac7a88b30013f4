"""A campaign prepared: one Optuna study per operation, on one database handle.

Study names are ``<campaign>.<operation>`` (e.g. ``arith.multiply``), visible to
``optuna studies --storage URL`` and to optuna-dashboard. Preparing validates the campaign,
builds its datasets, registers it (refusing a conflicting identity) and creates or joins its
studies; the loop that fills their budgets is the `Scheduler` (`sweep.search.scheduler`), as
KerasTuner's Oracle decides and its Tuner runs. The campaign knows nothing of Keras: it trains
through the `sweep.nets.Trainer` it is given, and tells the caller about each promoted model
through `on_promoted` (the CLI publishes it to the dashboard; `[tracking]` adds MLflow).
"""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from storage import Database, ModelEntry, ModelRegistry
from sweep.errors import ConfigError
from sweep.nets import Trainer
from sweep.problem.data import Dataset, make_dataset
from sweep.problem.operations import Operation
from sweep.problem.tables import Table
from sweep.search._optuna import quiet_optuna
from sweep.search.config import (
    CampaignConfig,
    keeping_stored_space,
    load_campaign_config,
    study_name,
)
from sweep.search.designs import startup_designs
from sweep.search.placement import one_blas_thread
from sweep.search.promotion import PromotedModel, PromotionHook
from sweep.search.pruners import make_pruner
from sweep.search.reporting import OperationStatus, Reporter
from sweep.search.samplers import make_sampler
from sweep.search.scheduler import Scheduler
from sweep.search.storage import SweepStorage, optuna_storage
from sweep.search.tracking import with_tracking

__all__ = ["Campaign", "PromotedModel", "PromotionHook", "run_campaign"]


class Campaign:
    """A validated campaign bound to a database: datasets built, studies created or loaded.

    Opens Optuna's storage on the database handle, which serves the registry and the named
    locks on the same engine (on a server: one small pool, at most 2 connections per
    process); `close` (or ``with``) closes them.
    """

    def __init__(
        self,
        config: CampaignConfig,
        database: Database,
        trainer: Trainer,
        *,
        on_promoted: PromotionHook | None = None,
        update_settings: bool = True,
        opened: SweepStorage | None = None,
    ) -> None:
        """Validate, build datasets, then register the campaign and create its studies.

        `opened` is Optuna's storage on `database` (`optuna_storage`; the campaign closes it);
        left out, the campaign opens it. `update_settings` stores this config's run settings
        (budgets, sampler, operations) over an existing campaign's, so workers that join later
        follow the newest `sweep run`.

        Raises:
            ConfigError: invalid settings, or an identity that conflicts with the stored one.
            storage.StorageError: the database cannot be reached or refuses a write.
        """
        config.validate()
        quiet_optuna()
        operations = config.resolved_operations()
        tables = _tables(config, database)
        # Build every dataset before writing: an impossible range is refused up front.
        self.datasets: dict[str, Dataset] = {
            op.name: make_dataset(op, config.data, tables.get(op.name)) for op in operations
        }
        self.operations: list[Operation] = operations
        self.config = config
        self.database = database
        self.trainer = trainer
        self.on_promoted = on_promoted
        self.studies: dict[str, optuna.Study] = {}
        self._scheduler: Scheduler | None = None
        # Optuna's storage first: a database Optuna refuses (a newer schema, another
        # application's SQLite file, a full disk) must be refused before our tables or the
        # campaign row are written into it.
        self._storage: SweepStorage | None = (
            opened if opened is not None else optuna_storage(database)
        )
        try:
            self._open(update_settings)
            # After `_open`: a joining worker follows the stored campaign's `[tracking]`.
            self.on_promoted = with_tracking(self.config.mlflow, self.config.name, on_promoted)
        except BaseException:
            self.close()
            raise

    @property
    def registry(self) -> ModelRegistry:
        return self.database.registry

    def _open(self, update_settings: bool) -> None:
        stored = load_campaign_config(self.database.campaigns, self.config.name)
        if stored is not None:
            self.config = keeping_stored_space(self.config, stored)
        config = self.config
        if stored is not None:
            conflicts = config.identity_conflicts(stored)
            if conflicts:
                raise ConfigError(
                    f"campaign {config.name!r} already exists with a different "
                    f"{', '.join(conflicts)}; use --campaign NEW_NAME for a new campaign"
                )

        def merge(raw: dict[str, Any] | None) -> dict[str, Any] | None:
            """Decided in the registry's transaction: another run may have created the
            campaign since it was read above."""
            if raw is None:
                return config.to_dict()
            current = CampaignConfig.from_dict(raw)
            conflicts = config.identity_conflicts(current)
            if conflicts:
                raise ConfigError(
                    f"campaign {config.name!r} already exists with a different "
                    f"{', '.join(conflicts)}; use --campaign NEW_NAME for a new campaign"
                )
            return self._merged_config(current).to_dict() if update_settings else None

        for name, source in config.datasets.items():
            if source.blob is not None:  # read from a file by this run: store it first
                self.database.datasets.save(config.name, name, source.blob, source.sha256)
        self.database.campaigns.register(config.name, merge)
        self.studies = {op.name: self._study(op) for op in self.operations}

    @property
    def storage(self) -> SweepStorage:
        assert self._storage is not None, "the campaign is closed"
        return self._storage

    @property
    def scheduler(self) -> Scheduler:
        """The loop that runs this campaign's trials (one per campaign, kept across runs)."""
        if self._scheduler is None:
            self._scheduler = Scheduler(self)
        return self._scheduler

    def run(self, reporter: Reporter | None = None) -> list[ModelEntry]:
        """Fill every operation's budget (`Scheduler.run`); the registry's best per operation."""
        with one_blas_thread():
            return self.scheduler.run(reporter)

    def run_operation(
        self, operation: Operation, reporter: Reporter, *, wait: bool = True
    ) -> OperationStatus:
        """Run trials for one operation until its budget is met (`Scheduler.run_operation`)."""
        with one_blas_thread():
            return self.scheduler.run_operation(operation, reporter, wait=wait)

    def best(self) -> list[ModelEntry]:
        names = {op.name for op in self.operations}
        return [e for e in self.registry.best_all(self.config.name) if e.operation in names]

    @property
    def slot_lock_seconds(self) -> float:
        """Seconds this process spent waiting for slot locks (the scale benchmark's figure)."""
        return 0.0 if self._scheduler is None else self._scheduler.slot_lock_seconds

    @property
    def trials_run(self) -> int:
        """Trials this process started (reserved a slot for)."""
        return 0 if self._scheduler is None else self._scheduler.trials_run

    def close(self) -> None:
        """Release every connection the campaign opened, the database's too; idempotent."""
        if self._storage is not None:
            self._storage.remove_session()
            self._storage.engine.dispose()
        self.database.close()

    def __enter__(self) -> Campaign:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @classmethod
    def join(
        cls,
        database: Database,
        name: str,
        trainer: Trainer,
        fallback: CampaignConfig | None = None,
        *,
        on_promoted: PromotionHook | None = None,
    ) -> Campaign:
        """A worker's view: the stored campaign, created from `fallback` if it does not exist.

        Several workers may start at once with the same `fallback`; the first one creates the
        campaign and the others join it (their fallback must agree on the campaign identity).
        """
        opened = optuna_storage(database)  # once: the campaign goes on with the same engine
        try:
            stored = load_campaign_config(database.campaigns, name)
            if stored is None and fallback is None:
                raise ConfigError(
                    f"campaign {name!r} does not exist on {database.masked}; create it with "
                    "`sweep run` or pass --config FILE"
                )
            if stored is not None and fallback is not None:
                conflicts = fallback.identity_conflicts(stored)
                if conflicts:
                    raise ConfigError(
                        f"campaign {name!r} exists with a different {', '.join(conflicts)} "
                        "than --config gives"
                    )
            config = stored if stored is not None else fallback
            assert config is not None
            return cls(
                config, database, trainer, on_promoted=on_promoted, update_settings=False,
                opened=opened,
            )
        except BaseException:
            opened.remove_session()  # idempotent: a campaign that failed has closed it already
            opened.engine.dispose()
            database.close()
            raise

    def _merged_config(self, stored: CampaignConfig | None) -> CampaignConfig:
        """This run's settings over the stored campaign's, keeping every operation it defines:
        a run that names fewer (``sweep run --ops add`` without the ``--data`` of an earlier
        run) must not leave the stored list naming a table or formula it no longer records."""
        if stored is None:
            return self.config
        ops = list(stored.operations)
        ops += [name for name in self.config.operations if name not in ops]
        expressions = {**stored.expressions, **self.config.expressions}
        datasets = {**stored.datasets, **self.config.datasets}
        return replace(
            self.config, operations=tuple(ops), expressions=expressions, datasets=datasets
        )

    def _study(self, operation: Operation) -> optuna.Study:
        config = self.config
        space = config.space_for(operation.name)
        max_epochs = int(max(space.epochs.values()))
        directions: list[StudyDirection] = [StudyDirection.MINIMIZE] * (
            2 if config.multi_objective else 1
        )
        name = study_name(config.name, operation.name)
        if self._seeded(name):
            # Joining a study that is created and seeded: no slot lock (behind dozens of
            # reserving workers its wait could outlast the lock's timeout) and no load of
            # every trial to see whether it has any.
            study = optuna.load_study(
                study_name=name,
                storage=self.storage,
                sampler=make_sampler(config, operation.name),
                pruner=make_pruner(config, max_epochs),
            )
            # Load its trials into Optuna's cache now: the first trial needs them (WAITING
            # ones first, then the sampler all), and here the load overlaps the worker's
            # TensorFlow import (sweep.nets.background).
            study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        else:
            study = self._create_study(operation, name, max_epochs, directions)
        return self._checked(operation, study)

    def _seeded(self, name: str) -> bool:
        """The study exists and its attributes are written (`objective` is the last of them)."""
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            return False
        return "objective" in self.storage.get_study_user_attrs(study_id)

    def _create_study(
        self,
        operation: Operation,
        name: str,
        max_epochs: int,
        directions: list[StudyDirection],
    ) -> optuna.Study:
        config = self.config
        space = config.space_for(operation.name)
        # Under the study's slot lock: workers starting together create and seed it once.
        with self.database.lock(f"{name}:slots"):
            study = optuna.create_study(
                storage=self.storage,
                study_name=name,
                sampler=make_sampler(config, operation.name),
                pruner=make_pruner(config, max_epochs),
                directions=directions,
                load_if_exists=True,
            )
            if config.startup_designs and not study.get_trials(deepcopy=False):
                designs = startup_designs(space)
                if config.trials is not None:
                    designs = designs[: config.trials]
                for params in designs:
                    study.enqueue_trial(params, user_attrs={"startup_design": True})
        return study

    def _checked(self, operation: Operation, study: optuna.Study) -> optuna.Study:
        """Refuse a study swept on other data; write its attributes on first use."""
        config = self.config
        name = study.study_name
        dataset = self.datasets[operation.name]
        recorded = study.user_attrs.get("data_fingerprint")
        if recorded is not None and recorded != dataset.fingerprint:
            # Another NumPy, or a changed generator: trials here would not be comparable.
            raise ConfigError(
                f"study {name!r} was swept on data with fingerprint {recorded[:12]}, but this "
                f"host generates {dataset.fingerprint[:12]} from the same settings; "
                "use the same package versions as the campaign's other workers"
            )
        if "operation" not in study.user_attrs:
            attrs: dict[str, Any] = {
                "campaign": config.name,
                "operation": operation.name,
                "expression": operation.expression,
                "arity": operation.arity,
                "inputs": list(operation.inputs),
                "ranges": [
                    [b.name, b.kind, b.low, b.high, b.band_low, b.band_high]
                    for b in dataset.bounds
                ],
                "integer_valued": operation.integer_valued,
                "seed": config.seed,
                "data": config.data.to_dict(),
                "data_fingerprint": dataset.fingerprint,
                "objective": f"validation {config.objective}",
            }
            for key, value in attrs.items():
                study.set_user_attr(key, value)
        return study



def _tables(config: CampaignConfig, database: Database) -> dict[str, Table]:
    """Each table operation's rows: as read by this run, else from the database (a worker,
    or a re-run without the file), checked against the campaign's recorded checksum."""
    out: dict[str, Table] = {}
    for name, source in config.datasets.items():
        if source.table is None:
            stored = database.datasets.load(config.name, name)
            if stored is None:
                raise ConfigError(
                    f"campaign {config.name!r} records the table {name!r}, but the database "
                    "holds no such table; run `sweep run` with its --data again"
                )
            source = source.with_blob(stored[0])
        assert source.table is not None
        out[name] = source.table
    return out


def run_campaign(
    config: CampaignConfig,
    database: Database,
    trainer: Trainer,
    reporter: Reporter | None = None,
    *,
    on_promoted: PromotionHook | None = None,
) -> list[ModelEntry]:
    """Prepare and run a campaign, return the best model per operation; closes what it opens."""
    with Campaign(config, database, trainer, on_promoted=on_promoted) as campaign:
        return campaign.run(reporter)
