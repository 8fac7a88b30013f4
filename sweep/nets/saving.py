"""Saving models to `.keras` bytes and loading them back in Keras safe mode, nothing else.

Loading refuses anything Keras would have to execute (Lambda layers, unknown classes); every
failure is one `ModelLoadError` line.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

# isort: off
import sweep.nets.layers  # noqa: F401  (registers the layers; starts TensorFlow quietly)
import keras

# isort: on
from sweep.errors import ModelLoadError

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


# Bounds on what reaches Keras. The sweep's models are a few kB to a few MB (the space is
# bounded at 250,000 parameters); a registry entry beyond these was not written by a sweep.
MAX_ARCHIVE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 64 << 20
MAX_CONFIG_BYTES = 1 << 20
MAX_PARAMETERS = 5_000_000
MAX_DIMENSION = 1_000_000
ARCHIVE_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})


def check_archive(data: bytes, *, label: str = "model") -> None:
    """Refuse an archive Keras should not even open: too big, unexpected members, a config
    that would build layers too large for the machine (Keras allocates them before safe
    mode looks at anything else).

    Raises:
        ModelLoadError: one line naming what is out of bounds.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ModelLoadError(
            f"{label} is {len(data):,} bytes; a model archive may be at most {MAX_ARCHIVE_BYTES:,}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            names = [m.filename for m in members]
            unexpected = sorted(set(names) - ARCHIVE_MEMBERS)
            if unexpected or len(names) != len(set(names)):
                shown = ", ".join(repr(n[:60]) for n in unexpected[:3]) or "a duplicate name"
                raise ModelLoadError(
                    f"{label} holds unexpected members ({shown}); a sweep model has only "
                    f"{', '.join(sorted(ARCHIVE_MEMBERS))}"
                )
            unpacked = sum(m.file_size for m in members)
            if unpacked > MAX_UNPACKED_BYTES:
                raise ModelLoadError(
                    f"{label} unpacks to {unpacked:,} bytes; the limit is {MAX_UNPACKED_BYTES:,}"
                )
            config = next((m for m in members if m.filename == "config.json"), None)
            if config is None:
                raise ModelLoadError(f"{label} has no config.json")
            if config.file_size > MAX_CONFIG_BYTES:
                raise ModelLoadError(
                    f"{label}'s config.json is {config.file_size:,} bytes; the limit is "
                    f"{MAX_CONFIG_BYTES:,}"
                )
            text = archive.read(config)[: MAX_CONFIG_BYTES + 1]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise ModelLoadError(f"{label} is not a readable .keras archive ({e})") from None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelLoadError(f"{label}'s config.json is not JSON") from None
    parameters = _parameters(parsed, label)
    if parameters > MAX_PARAMETERS:
        raise ModelLoadError(
            f"{label} would build {parameters:,} parameters; the limit is {MAX_PARAMETERS:,}"
        )


def _parameters(config: object, label: str) -> int:
    """An upper estimate of the weights the config builds, walking every nested layer; any
    dimension beyond `MAX_DIMENSION` is refused at once."""
    total = 0
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key in ("units", "filters", "output_dim", "input_dim", "num_heads", "key_dim"):
            value = node.get(key)
            if _number(value) and not 0 <= value <= MAX_DIMENSION:  # type: ignore[operator]
                raise ModelLoadError(
                    f"{label} has a layer with {key} = {value:g}; the limit is {MAX_DIMENSION:,}"
                )
        for key in ("batch_shape", "input_shape", "shape", "batch_input_shape"):
            value = node.get(key)
            if isinstance(value, list):
                for dimension in value:
                    if _number(dimension) and not 0 <= dimension <= MAX_DIMENSION:
                        raise ModelLoadError(
                            f"{label} has a shape dimension of {dimension:g}; the limit is "
                            f"{MAX_DIMENSION:,}"
                        )
        inner = node.get("config")
        units = inner.get("units") if isinstance(inner, dict) else node.get("units")
        build = node.get("build_config")
        if isinstance(units, int) and isinstance(build, dict):
            shape = build.get("input_shape")
            width = shape[-1] if isinstance(shape, list) and shape else None
            if isinstance(width, int):
                total += units * (width + 1)
        stack.extend(v for v in node.values() if isinstance(v, dict | list))
    return total


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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


def check_keras_version(saved_version: str, *, label: str) -> None:
    """Refuse a model saved by another major Keras version (its format may not load)."""
    saved = saved_version.split(".")[0]
    running = keras.__version__.split(".")[0]
    if saved != running:
        raise ModelLoadError(
            f"{label} was saved by Keras {saved_version}; "
            f"this is Keras {keras.__version__} (major versions must match)"
        )
