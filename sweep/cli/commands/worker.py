"""`sweep worker`: join a campaign from any host and work until every budget is met."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, add_log_format
from sweep.cli.campaigns import build_config
from sweep.cli.commands.base import Command
from sweep.cli.runtime import background_trainer, leave_background_import, publisher

if TYPE_CHECKING:
    from storage import Database

__all__ = ["WorkerCommand"]


class WorkerCommand(Command):
    """A worker needs only the database: the campaign's whole configuration is stored there.

    Also the process behind each of `sweep run --workers K` (which waits for its parent's go).
    """

    name = "worker"
    help = "join a campaign from any host; work until every budget is met"
    writes = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument(
            "--config",
            help="campaign TOML file, used to create the campaign if it does not exist",
        )
        parser.add_argument(
            "--quiet", action="store_true",
            help="no operation lines (for `run --workers K`, whose parent prints them): "
            "trials, promotions and warnings, or warnings alone under live bars",
        )
        add_log_format(parser)

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        from sweep.search.workers import (
            exit_with_parent,
            install_signal_handlers,
            pin_to_assigned_core,
            workers_from_environment,
        )

        # Pinned first: TensorFlow's threads, started by the import, inherit the core. (NumPy
        # has loaded by now: the parent sized its OpenBLAS pool through the environment,
        # placement.)
        pin_to_assigned_core()
        install_signal_handlers()
        exit_with_parent()
        fallback = None
        if args.config:
            args.ops = args.trials = args.timeout = args.seed = args.sampler = args.pruner = None
            args.expr = []
            fallback = build_config(args, campaign)
        trainer = background_trainer(workers_from_environment(), start=True)
        from sweep.cli.display import make_reporter
        from sweep.search.campaign import Campaign
        from sweep.search.workers import wait_for_the_parent

        name = fallback.name if fallback is not None else campaign
        # A worker logs lines, on a terminal too; a quiet one under its parent's live bars
        # (stderr is a terminal) prints warnings only.
        reporter = make_reporter(
            args.log_format, name, live=None if args.quiet else False, quiet=args.quiet
        )
        try:
            if not wait_for_the_parent():  # `run --workers K` could not prepare its campaign
                trainer.abandon()
                return 0
            joined = Campaign.join(database, name, trainer, fallback, on_promoted=publisher())
            with joined as prepared:
                # The import silences stderr while it runs: nothing may be printed before it ends.
                trainer.wait()
                with reporter:
                    entries = prepared.run(reporter)
        except BaseException:
            leave_background_import(trainer)
            raise
        if not args.quiet:
            reporter.note(
                f"worker done: campaign {name!r}, {len(entries)} operation(s) with a model",
                event="worker_done",
            )
        return 0
