"""The installed package's version (``sweep --version``, the exports' producer field)."""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("neural-arithmetic-sweep")
except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"
