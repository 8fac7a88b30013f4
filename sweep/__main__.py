"""`python -m sweep`."""

from __future__ import annotations

from sweep.cli import run

run()
