"""`sweep serve`: answer over HTTP (TF Serving's REST API, KServe v2) with the best models."""

from __future__ import annotations

import argparse
import sys
from types import FrameType
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, int_in, port, positive_float
from sweep.cli.commands.base import Command
from sweep.cli.runtime import training_runtime
from sweep.cli.text import say

if TYPE_CHECKING:
    from storage import Database

__all__ = ["ServeCommand"]


class ServeCommand(Command):
    """The HTTP apps and the model store live in `sweep.publishing.serve`; this wires them.

    A missing extra is one line before anything loads; SIGTERM (docker stop) ends the server
    like Ctrl-C, after uvicorn's drain.
    """

    name = "serve"
    help = "answer over HTTP (TF Serving's REST API, KServe v2) with the best models"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument(
            "operations", nargs="*", metavar="OP",
            help="operations to serve (default: every operation with a model)",
        )
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
        )
        parser.add_argument("--port", type=port, default=8500, help="port (default: %(default)s)")
        parser.add_argument(
            "--backend", choices=("auto", "onnxruntime", "tensorflow"), default="auto",
            help="onnxruntime (needs the onnx extra; the fast one), tensorflow, or auto (default)",
        )
        parser.add_argument(
            "--poll", type=positive_float, default=2.0, metavar="SECONDS",
            help="how often to look for a newly promoted model (default: %(default)s)",
        )
        parser.add_argument(
            "--threads", type=int_in(0, 64), default=2, metavar="N",
            help="threads that predict off the event loop, so a large request does not hold up "
            "small ones (default: %(default)s; 0: on the event loop)",
        )
        parser.add_argument(
            "--access-log", action="store_true",
            help="log one line per request (client, method, path, status, ms; never a body)",
        )

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        import logging

        from sweep.nets.portable import require_modules
        from sweep.publishing.lookup import check_operation_name
        from sweep.publishing.serve import SERVE_EXTRA, SERVER_MODULES, ModelStore, choose_backend

        for name in args.operations:
            check_operation_name(name)
        require_modules(SERVER_MODULES, "sweep serve", SERVE_EXTRA)
        backend = choose_backend(args.backend)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sweep serve: %(message)s"))
        logger = logging.getLogger("sweep.serve")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if backend == "tensorflow":
            say(
                "sweep serve: warning: onnxruntime is not installed, so the models run under "
                "TensorFlow in this process (about 8-13 ms per answer with 8 clients, not the "
                f"5 ms target; {SERVE_EXTRA} installs what is missing)",
                err=True,
            )
            training_runtime(1)
        store = ModelStore(
            database, campaign, args.operations or None, backend, poll_seconds=args.poll
        )
        from sweep.publishing.serve import serve

        def listening(address: str) -> None:
            names = (
                ", ".join(args.operations) if args.operations else "every operation with a model"
            )
            say(
                f"sweep serve: {names} of campaign {campaign!r} on {database.masked} "
                f"({backend}); listening on {address}  (Ctrl-C to stop)",
                err=True,
            )

        import signal

        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt  # SIGTERM (docker stop) ends like Ctrl-C, after the drain

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import contextlib

        with contextlib.suppress(KeyboardInterrupt):
            serve(store, host=args.host, port=args.port, on_listening=listening,
                  threads=args.threads, access_log=args.access_log)
        say("sweep serve: stopped", err=True)
        return 0
