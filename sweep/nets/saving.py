"""Saving models to `.keras` bytes and loading them back in Keras safe mode, nothing else.

Loading refuses anything Keras would have to execute (Lambda layers, unknown classes) and, first,
anything that would build more than the bounds (`sweep.nets.archive.check_archive`, which needs
no Keras: callers that may refuse a model before TensorFlow starts call it themselves); every
failure is one `ModelLoadError` line.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from pathlib import Path

# isort: off
import sweep.nets.layers  # noqa: F401  (registers the layers; starts TensorFlow quietly)
import keras

# isort: on
from sweep.errors import ModelLoadError
from sweep.nets.archive import MAX_ARCHIVE_BYTES, check_archive, check_keras_version

__all__ = [
    "ModelLoadError",
    "check_archive",
    "check_keras_version",
    "load_model_bytes",
    "load_model_file",
    "serialize_model",
]


def serialize_model(model: keras.Model) -> bytes:
    """The `.keras` archive's bytes (weights, config; no pickles)."""
    with tempfile.TemporaryDirectory(prefix="sweep-export-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def load_model_bytes(data: bytes, *, label: str = "model") -> keras.Model:
    """Load a `.keras` archive in safe mode; refuse anything Keras would have to execute,
    and anything too large to open (`check_archive`) before Keras sees it."""
    check_archive(data, label=label)
    with tempfile.TemporaryDirectory(prefix="sweep-load-") as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(data)
        return load_model_file(path, label=label)


def load_model_file(path: str | Path, *, label: str | None = None) -> keras.Model:
    """`keras.saving.load_model` with safe mode on, errors turned into one line."""
    name = label or str(path)
    if not Path(path).is_file():
        raise ModelLoadError(f"{name} is not a file")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" about a file it found
        raise ModelLoadError(f"{name} is not a .keras archive (not a zip file)")
    size = Path(path).stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise ModelLoadError(
            f"{name} is {size:,} bytes; a model archive may be at most {MAX_ARCHIVE_BYTES:,}"
        )
    check_archive(Path(path).read_bytes(), label=name)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types; all mean "not a model we can trust"
        raise ModelLoadError(f"cannot load {name} in safe mode: {_root_reason(e)}") from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{name} is not a Keras model")
    return model


def _root_reason(error: BaseException) -> str:
    """The first sentence of the innermost error: Keras wraps "Could not locate class 'X'" in a
    generic "Functional could not be deserialized properly" whose first line names nothing."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0][:300]
