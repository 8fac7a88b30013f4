"""Printing user data safely: one line, control characters escaped, no markup.

Names, expressions, paths and registry strings reach the terminal through here, so an ANSI or
OSC-8 escape sequence stored in the database, or typed into a config file, is shown, not run.
"""

from __future__ import annotations

import re
import sys

__all__ = ["safe", "say"]

# C0 and C1 controls (ESC starts ANSI and OSC sequences, 0x9b is a one-byte CSI), DEL, and
# the Unicode bidirectional overrides that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(value: object) -> str:
    """`value` as one line of plain text a terminal shows as is (controls escaped)."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(escape, str(value))


def say(text: object, *, err: bool = False) -> None:
    """Print one line of (sanitised) text: the CLI's only way to print user data."""
    print(safe(text), file=sys.stderr if err else sys.stdout, flush=True)


