"""What the search tells its caller as it goes: a status per operation, warnings.

The search never prints; the CLI passes a `Reporter` that renders (sweep.cli.display), a
library caller gets `SilentReporter`, which keeps the warnings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["BUDGET_MET", "EXACT", "TIME_UP", "OperationStatus", "Reporter", "SilentReporter"]

# Why an operation is done (`OperationStatus.stopped`).
EXACT = "exact"  # its best model is exact (stop_when_exact)
BUDGET_MET = "budget met"  # its counted trials reached the budget
TIME_UP = "time up"  # this worker's timeout for it ran out


@dataclass
class OperationStatus:
    """What a progress display needs after each trial."""

    operation: str
    study_name: str
    finished: int
    budget: int | None
    best_value: float | None
    last_state: str | None = None  # the study's newest trial's (any worker's)
    done: bool = False
    busy: bool = False  # another worker held its slot lock when this worker last tried
    exact_trial: int | None = None  # done because this trial's model is exact (stop_when_exact)
    stopped: str | None = None  # once done: EXACT, BUDGET_MET or TIME_UP
    # The trial this worker has just run (`trial_finished`); None when the status comes from a
    # look at the study (the parent of `run --workers K`), not from a trial of its own.
    trial: int | None = None
    trial_state: str | None = None  # COMPLETE, PRUNED or FAIL
    trial_value: float | None = None  # its (first) objective value, if finite
    trial_version: int | None = None  # the registry version it was promoted to, if it was

    def ran(self, trial: FrozenTrial | None) -> None:
        """Record the trial this worker has just run (None: it cannot be read back)."""
        if trial is None:
            self.trial = self.trial_state = self.trial_value = self.trial_version = None
            return
        value = trial.values[0] if trial.values else None
        version = trial.user_attrs.get("registry_version")
        self.trial = trial.number
        self.trial_state = trial.state.name
        self.trial_value = value if value is not None and math.isfinite(value) else None
        self.trial_version = version if isinstance(version, int) else None


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
