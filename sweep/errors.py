"""The sweep's exception tree: the CLI turns any of these into one line and exit code 2.

Every floor raises from here, so the CLI (and a library user) catches one root, `SweepError`
(storage/ has its own root, `storage.StorageError`, because it never imports sweep).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DashboardError",
    "ExportError",
    "ExpressionError",
    "FatalSweepError",
    "ModelLoadError",
    "PublishError",
    "ReportError",
    "ServeError",
    "SweepError",
    "TrialFailure",
    "describe",
    "first_line",
]


class SweepError(Exception):
    """Base class of every error the user can cause or fix; never a bug."""


class ConfigError(SweepError):
    """A campaign setting, flag, environment variable or config file is invalid; nothing has
    been written."""


class ExpressionError(ConfigError):
    """A user-defined expression is not in the restricted grammar."""


class TrialFailure(SweepError):
    """A single trial failed (diverged, too slow); the sweep records it and goes on."""


class FatalSweepError(SweepError):
    """The search cannot go on (e.g. every recent trial failed); stop the sweep."""


class ModelLoadError(SweepError):
    """A stored model cannot be loaded safely (unknown layer, Lambda, other Keras version)."""


class ExportError(SweepError):
    """A model cannot be written faithfully in the requested format (SavedModel, ONNX); nothing
    is written."""


class ServeError(SweepError):
    """The prediction service cannot start (port in use, no usable model backend)."""


class PublishError(SweepError):
    """The study note or the artifacts could not be written; the model itself is safe."""


class DashboardError(SweepError):
    """The dashboard cannot start (port in use, missing database or artifact folder)."""


class ReportError(SweepError):
    """The report cannot be written (bad output path, no such campaign or database)."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an error's message, cut to `limit` characters.

    Driver and library messages run over many lines (SQL echoes, tracebacks of a remote
    side); one line is what a user reads in a warning or an error.
    """
    for line in str(error).splitlines():
        if line.strip():
            text = " ".join(line.split())
            return text if len(text) <= limit else text[: limit - 3] + "..."
    return type(error).__name__


def describe(error: BaseException, limit: int = 200) -> str:
    """``TypeName: first line``: for warnings where the kind of error matters (a failed trial)."""
    text = first_line(error, limit)
    name = type(error).__name__
    return name if text == name else f"{name}: {text}"
