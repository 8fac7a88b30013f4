"""Every use of Optuna's private API, in one place, behind one version check.

Optuna's public API does not offer what the sweep needs to be cheap per trial (buffered trial
writes, one read of the study per trial for the sampler and the pruner, an aggregate count
query) or safe (artifacts recorded only after their file is complete). Those touches live in
this package and nowhere else (tests/test_layers.py checks the rest of the tree), so an Optuna
upgrade has one place to review. `SUPPORTED_MAJOR` is the Optuna release the touches were
written and tested against; another major version is refused when this package is imported,
with one line, instead of failing somewhere deep in a trial.
"""

from __future__ import annotations

import warnings

import optuna

from sweep.errors import FatalSweepError

SUPPORTED_MAJOR = 5


def check_optuna_version(version: str = optuna.__version__) -> None:
    """Refuse an Optuna major version the private touches were not written for.

    Raises:
        FatalSweepError: `version`'s major number is not `SUPPORTED_MAJOR`.
    """
    major = version.split(".")[0]
    if major != str(SUPPORTED_MAJOR):
        raise FatalSweepError(
            f"optuna {version} is installed, but sweep relies on internals of optuna "
            f"{SUPPORTED_MAJOR}.x; pip install 'optuna>={SUPPORTED_MAJOR},<{SUPPORTED_MAJOR + 1}'"
        )


check_optuna_version()


def quiet_optuna() -> None:
    """Optuna's logging and warnings as a sweep wants them; idempotent.

    Optuna logs every failed trial with its traceback; the sweep reports failures in one line
    itself (and records them on the trial), so only Optuna's errors are shown. Heartbeats,
    grouped TPE and the retry callback are marked experimental; the sweep pins Optuna's major
    version and tests them, so those warnings only alarm users.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
