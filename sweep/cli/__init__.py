"""The command line: the only floor that parses arguments, prints (rich) or exits."""

from __future__ import annotations

from sweep.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
