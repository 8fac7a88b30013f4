"""The sweep's exception hierarchy: the CLI turns any of these into one line and exit code 2."""

from __future__ import annotations


class SweepError(Exception):
    """Base class of every error the user can cause or fix; never a bug."""


class ConfigError(SweepError):
    """A campaign setting, flag or config file is invalid; nothing has been written."""


class ExpressionError(ConfigError):
    """A user-defined expression is not in the restricted grammar."""


class TrialFailure(SweepError):
    """A single trial failed (diverged, too slow); the sweep records it and goes on."""


class FatalSweepError(SweepError):
    """The search cannot go on (e.g. every recent trial failed); stop the sweep."""
