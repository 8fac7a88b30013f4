"""`sweep pull`: write an operation's model as .keras, a TF SavedModel or ONNX."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, int_in
from sweep.cli.commands.base import Command
from sweep.cli.text import say

if TYPE_CHECKING:
    from storage import Database

__all__ = ["MAX_VERSION", "PullCommand"]

MAX_VERSION = 2**31 - 1


class PullCommand(Command):
    """Everything cheap is checked before TensorFlow starts (about 8 s): the name, the extra."""

    name = "pull"
    help = "write an operation's model as .keras, a TF SavedModel or ONNX"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("operation")
        parser.add_argument(
            "--format", choices=("keras", "savedmodel", "onnx"), default="keras",
            help="keras (default), savedmodel (a folder for TF Serving) or onnx",
        )
        parser.add_argument(
            "-o", "--output", help="output path (default: OP.keras, OP.onnx, or the folder OP)"
        )
        parser.add_argument(
            "--version", type=int_in(1, MAX_VERSION), help="registry version (default: best)"
        )
        parser.add_argument("--force", action="store_true", help="overwrite an existing output")

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        from sweep.nets.portable import ONNX_EXTRA, ONNX_MODULES, require_modules
        from sweep.publishing.lookup import check_operation_name

        check_operation_name(args.operation)
        if args.format == "onnx":  # before TensorFlow starts: a missing extra is a quick answer
            require_modules(ONNX_MODULES, "--format onnx", ONNX_EXTRA)
        # TensorFlow starts inside `pull`, after the output path and the registry entry are
        # checked.
        from sweep.publishing.pulling import pull

        pulled = pull(
            args.operation, args.output, database=database, campaign=campaign, version=args.version,
            force=args.force, format=args.format,
        )
        entry = pulled.entry
        checked = ""
        if pulled.comparison is not None:
            checked = f"; answers as the registry model: {pulled.comparison.describe()}"
        what = "folder" if pulled.format == "savedmodel" else "file"
        say(
            f"wrote {what} {pulled.path} ({pulled.size_bytes} bytes) from {entry.operation} "
            f"version {entry.version}, trial {entry.trial_number} (registry sha256 "
            f"{entry.sha256[:12]}… verified){checked}"
        )
        return 0
