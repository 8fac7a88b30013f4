"""`sweep run`: create (or resume) a campaign here and fill every operation's budget."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, add_log_format, int_in, positive_float
from sweep.cli.campaigns import build_config
from sweep.cli.commands.base import Command
from sweep.cli.runtime import background_trainer, leave_background_import, publisher

if TYPE_CHECKING:
    from storage import Database
    from sweep.search.campaign import Campaign
    from sweep.search.config import CampaignConfig
    from sweep.search.workers import LocalWorkers

__all__ = ["MAX_LOCAL_WORKERS", "MAX_SEED", "MAX_TRIALS", "RunCommand"]

# Local worker processes on one machine: each holds a TensorFlow runtime (~0.8 GiB) and two
# database connections, so more than this is a typo, not a plan (workers on other hosts are
# started there with `sweep worker`).
MAX_LOCAL_WORKERS = 64
MAX_TRIALS = 10**7
MAX_SEED = 2**32 - 1


class RunCommand(Command):
    """Prepare the campaign, run it (alone or with K local workers), print the best table."""

    name = "run"
    help = "run (or resume) a sweep"
    writes = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("--ops", help="comma-separated operations, or 'all' (default: all)")
        parser.add_argument(
            "--trials", type=int_in(1, MAX_TRIALS), help="counted trials per operation"
        )
        parser.add_argument(
            "--timeout", type=positive_float,
            help="wall-clock seconds per operation (alone: no trial cap)",
        )
        parser.add_argument(
            "--stop-when-exact", action=argparse.BooleanOptionalAction, default=None,
            help="stop an operation once its best model is exact on validation, test and "
            "extrapolation (default: on; --no-stop-when-exact fills the budget)",
        )
        parser.add_argument("--config", help="campaign TOML file")
        parser.add_argument(
            "--seed", type=int_in(0, MAX_SEED), help="seed for data and sampler"
        )
        parser.add_argument(
            "--expr", action="append", default=[], metavar="NAME=EXPRESSION",
            help="user-defined operation over named inputs, e.g. --expr 'cube=a*a*a' or "
            "--expr 'force=G*m1*m2/r**2' (repeatable)",
        )
        parser.add_argument(
            "--data", action="append", default=[], metavar="NAME=FILE",
            help="operation defined by a table (CSV, or Parquet with pyarrow): every column "
            "but --target is an input (repeatable)",
        )
        parser.add_argument(
            "--target", action="append", default=[], metavar="COLUMN",
            help="the column --data predicts: one for all tables, or one per --data in order",
        )
        parser.add_argument("--sampler", help="auto, tpe, random, cmaes, gp or nsga2")
        parser.add_argument("--pruner", help="median, hyperband or none")
        parser.add_argument(
            "--workers", type=int_in(1, MAX_LOCAL_WORKERS), default=1,
            help=f"local worker processes sharing this machine's cores (default 1, at most "
            f"{MAX_LOCAL_WORKERS})",
        )
        add_log_format(parser)

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        config = build_config(args, campaign)
        # With K >= 2 workers this process only coordinates: its workers import TensorFlow, it
        # does not (the processes start sooner, and K imports do not queue behind a K+1-th).
        trainer = background_trainer(args.workers, start=args.workers == 1)
        from sweep.search.workers import LocalWorkers, install_signal_handlers

        install_signal_handlers()
        # Started before Optuna loads here: their imports overlap the campaign's preparation.
        # Its workers print their own trials in JSON too (in text they see the same stderr).
        worker_args = ("--log-format", "json") if args.log_format == "json" else ()
        workers = (
            LocalWorkers(database, config.name, args.workers, worker_args)
            if args.workers > 1
            else None
        )
        try:
            from sweep.search.campaign import Campaign

            with Campaign(config, database, trainer, on_promoted=publisher()) as prepared:
                if workers is not None:
                    workers.release()
                # The import silences stderr while it runs: nothing may be printed before it ends.
                trainer.wait()
                return _run_prepared(args, database.masked, config, prepared, workers)
        except BaseException:
            if workers is not None:
                workers.stop()
            leave_background_import(trainer)
            raise


def _run_prepared(
    args: argparse.Namespace,
    storage_shown: str,
    config: CampaignConfig,
    prepared: Campaign,
    workers: LocalWorkers | None,
) -> int:
    """Announce the campaign (on `storage_shown`, the masked URL), run it, print the best table."""
    from sweep.search.workers import run_local_workers

    ops = ", ".join(op.name for op in prepared.operations)
    budget = []
    if config.trials is not None:
        budget.append(f"{config.trials} trials")
    if config.timeout is not None:
        budget.append(f"{config.timeout:g} s")
    if config.stop_when_exact:
        budget.append("an exact model")
    from sweep.cli.display import make_reporter, print_best_table
    from sweep.search.budget import exact_trial

    def exact(operation: str) -> int | None:
        return exact_trial(prepared.registry.best(config.name, operation))

    reporter = make_reporter(
        args.log_format, config.name, timeout=config.timeout,
        exact=exact if config.stop_when_exact else None,
        names=[op.name for op in prepared.operations],
    )
    reporter.note(
        f"campaign {config.name!r} on {storage_shown}: {ops}; budget per operation: "
        f"{' or '.join(budget)}; {args.workers} worker(s)",
        event="campaign",
    )
    with reporter:
        if workers is None:
            prepared.run(reporter)
        else:
            run_local_workers(prepared, workers, reporter)

    # Which operations stopped at an exact model (a column only when the run stops so).
    entries = prepared.best()
    stopped = {e.operation: exact_trial(e) for e in entries}
    print_best_table(
        entries, prepared.operations,
        stopped_exact={op: trial for op, trial in stopped.items() if trial is not None}
        if config.stop_when_exact else None,
    )
    return 0
