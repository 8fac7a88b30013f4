"""Which Keras saved a model, checked against the running one without importing Keras."""

from __future__ import annotations

import importlib.metadata

from sweep.errors import ModelLoadError

__all__ = ["check_keras_version"]


def check_keras_version(saved_version: str, *, label: str) -> None:
    """Refuse a model saved by another major Keras version (read without importing Keras)."""
    try:
        running = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"cannot load {label}: Keras is not installed") from None
    if saved_version.split(".")[0] != running.split(".")[0]:
        raise ModelLoadError(
            f"{label} was saved by Keras {saved_version}; "
            f"this is Keras {running} (major versions must match)"
        )
