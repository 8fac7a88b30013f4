"""What the search tells its caller as it goes: a status per operation, warnings.

The search never prints; the CLI passes a `Reporter` that renders (sweep.cli.display), a
library caller gets `SilentReporter`, which keeps the warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["OperationStatus", "Reporter", "SilentReporter"]


@dataclass
class OperationStatus:
    """What a progress display needs after each trial."""

    operation: str
    study_name: str
    finished: int
    budget: int | None
    best_value: float | None
    last_state: str | None = None
    done: bool = False
    busy: bool = False  # another worker held its slot lock when this worker last tried
    exact_trial: int | None = None  # done because this trial's model is exact (stop_when_exact)


class Reporter(Protocol):
    def operation_started(self, status: OperationStatus) -> None: ...
    def trial_finished(self, status: OperationStatus) -> None: ...
    def operation_finished(self, status: OperationStatus) -> None: ...
    def warning(self, message: str) -> None: ...


class SilentReporter:
    """Reporter for library use: collects warnings, shows nothing."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def operation_started(self, status: OperationStatus) -> None:
        pass

    def trial_finished(self, status: OperationStatus) -> None:
        pass

    def operation_finished(self, status: OperationStatus) -> None:
        pass

    def warning(self, message: str) -> None:
        self.warnings.append(message)
