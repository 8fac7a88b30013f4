"""`sweep dashboard`: browse every study in optuna-dashboard, safe by default."""

from __future__ import annotations

import argparse
from types import FrameType
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_storage_argument, port, shown
from sweep.cli.commands.base import Command
from sweep.cli.text import say
from sweep.errors import ConfigError

if TYPE_CHECKING:
    from storage import Database

__all__ = ["DashboardCommand"]


class DashboardCommand(Command):
    """Safe by default: a host beyond loopback needs `--allow-remote`, and is then read-only.

    optuna-dashboard lets anyone who reaches it read every study and delete them; on such a
    host `--writable` keeps its writes.
    """

    name = "dashboard"
    help = "browse the studies in optuna-dashboard"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_storage_argument(parser)
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
        )
        parser.add_argument("--port", type=port, default=8080, help="port (default: %(default)s)")
        parser.add_argument(
            "--allow-remote", action="store_true",
            help="allow a --host beyond loopback (anyone who reaches it sees every study); the "
            "dashboard is then read-only unless --writable is given too",
        )
        parser.add_argument(
            "--read-only", action="store_true",
            help="refuse every request that would change the database (notes, deletions, ...)",
        )
        parser.add_argument(
            "--writable", action="store_true",
            help="with --allow-remote: keep optuna-dashboard's writes (deleting studies, ...)",
        )
        parser.add_argument(
            "--artifacts", metavar="DIR|s3://BUCKET/PREFIX",
            help="artifact folder or bucket (default: $SWEEP_ARTIFACTS, else ./sweep-artifacts "
            "if it exists)",
        )
        # Shows every study; `sweep.cli.main` still reads the attribute.
        parser.set_defaults(campaign=None)

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        import signal
        from pathlib import Path

        from sweep.publishing.dashboard import is_loopback, open_dashboard
        from sweep.publishing.notes import default_artifact_dir
        from sweep.settings import ArtifactPlace, parse_artifact_place

        local = is_loopback(args.host)
        if not local and not args.allow_remote:
            raise ConfigError(
                f"--host {shown(args.host)} is reachable from other machines, and "
                "optuna-dashboard lets anyone who reaches it read every study and delete them; "
                "pass --allow-remote to mean it (read-only unless --writable too), or bind "
                "127.0.0.1 and use an SSH tunnel"
            )
        if args.writable and not args.allow_remote:
            raise ConfigError(
                "--writable goes with --allow-remote (a loopback dashboard is writable)"
            )
        if args.writable and args.read_only:
            raise ConfigError("--read-only and --writable contradict each other; pick one")
        read_only = args.read_only or (not local and not args.writable)
        artifacts: ArtifactPlace | None = (
            parse_artifact_place(args.artifacts, "--artifacts")
            if args.artifacts else default_artifact_dir()
        )
        if not args.artifacts and isinstance(artifacts, Path) and not artifacts.is_dir():
            artifacts = None  # The default folder is optional; an explicit one must exist.
        server = open_dashboard(
            database, host=args.host, port=args.port, artifact_dir=artifacts, read_only=read_only
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt  # SIGTERM (docker stop) ends like Ctrl-C, not mid-response.

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Even if started ignored.
        where = f"; artifacts from {artifacts}" if artifacts else ""
        mode = "; read-only" if read_only else ""
        say(f"optuna-dashboard on {database.masked}{where}{mode}")
        if not local:
            say(
                f"warning: the dashboard is reachable from other machines on {args.host}"
                f"{' (read-only)' if read_only else ', and anyone who reaches it can change it'}",
                err=True,
            )
        say(f"open {server.url}  (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            say("dashboard stopped", err=True)
        finally:
            server.close()
        return 0
