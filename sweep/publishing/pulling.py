"""`sweep pull` in every format: the registry's `.keras`, a TensorFlow SavedModel, ONNX.

Each export is checked before anything is written: the registry bytes against their sha256,
the model in Keras safe mode, and the exported form's answers against the Keras model's on the
operation's own held-out inputs, zeros, range edges and extrapolation band
(`sweep.nets.portable.TOLERANCE`). Every format takes float64 rows of the operation's inputs,
in its order (``a, b``; or ``n, R, T, V`` for ``n*R*T/V``); the ONNX file records that order
in its metadata (``inputs``).
Nothing is written through a symbolic link or over an existing output without `force`, and
only complete outputs appear (a temporary file or folder, then one rename).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from storage import Database, ModelEntry
from sweep.errors import ConfigError
from sweep.nets.portable import (
    ONNX_EXTRA,
    ONNX_MODULES,
    Comparison,
    default_probe,
    require_modules,
)
from sweep.problem.data import DataSpec, make_dataset
from sweep.problem.operations import Operation
from sweep.publishing.lookup import check_operation_name, fetch_model, resolve_operation
from sweep.publishing.outputs import check_output_path, write_atomically
from sweep.search.config import DEFAULT_CAMPAIGN, CampaignConfig

if TYPE_CHECKING:
    from sweep.problem.tables import Table

__all__ = ["FORMATS", "Pulled", "campaign_table", "default_output", "probe_inputs", "pull"]

FORMATS: tuple[str, ...] = ("keras", "savedmodel", "onnx")
_SUFFIX = {"keras": ".keras", "onnx": ".onnx"}


@dataclass(frozen=True)
class Pulled:
    """What a pull wrote, and how faithfully (None for `.keras`: the registry's own bytes)."""

    entry: ModelEntry
    path: Path
    format: str
    size_bytes: int
    comparison: Comparison | None


def default_output(operation: str, format: str) -> Path:
    """``OP.keras``, ``OP.onnx``, or the folder ``OP`` (TF Serving's model base path)."""
    return Path(operation + _SUFFIX.get(format, ""))


def pull(
    operation: str,
    output: str | os.PathLike[str] | None = None,
    *,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
    force: bool = False,
    format: str = "keras",
) -> Pulled:
    """Write the best (or a given version's) model for `operation` in `format`.

    Raises:
        ConfigError: unknown operation or format, a bad output path, a missing extra.
        storage.ModelNotFound, storage.ChecksumMismatch: no such model, corrupted bytes.
        ModelLoadError: the model is unsafe or incompatible. ExportError: the export would not
            reproduce the registry model's answers.
    """
    check_operation_name(operation)
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "onnx":
        require_modules(ONNX_MODULES, "--format onnx", ONNX_EXTRA)
    path = _output_path(operation, output, format)
    if format == "savedmodel":
        _check_savedmodel_output(path, force=force)
    else:
        check_output_path(
            path, force=force, suffix=_SUFFIX[format], database=database.sqlite_path
        )
    entry, data = fetch_model(database, campaign, operation, version)
    label = f"{operation} version {entry.version}"
    from sweep.nets.archive import check_archive

    check_archive(data, label=label)  # before TensorFlow starts: a refusal answers at once
    from sweep.nets.saving import load_model_bytes

    # Load before writing: anything we hand out comes from a model that loads in safe mode.
    model = load_model_bytes(data, label=label)
    if format == "keras":
        write_atomically(path, data, force=force)
        return Pulled(entry, path, format, len(data), None)
    op = resolve_operation(database.campaigns, campaign, operation)
    stored = database.campaigns.load(campaign)
    config = CampaignConfig.from_dict(stored) if stored else None
    spec = config.data if config is not None else DataSpec()
    probe = probe_inputs(op, spec, campaign_table(database, config, op))
    if format == "onnx":
        from sweep.nets.exporting import export_onnx

        onnx_bytes, comparison = export_onnx(
            model,
            probe=probe,
            integer_valued=op.integer_valued,
            metadata=_metadata(entry, op),
            label=f"the ONNX export of {label}",
        )
        write_atomically(path, onnx_bytes, force=force)
        return Pulled(entry, path, format, len(onnx_bytes), comparison)
    comparison, size = _write_savedmodel(model, entry, path, probe, op, force=force)
    return Pulled(entry, path, format, size, comparison)


def _output_path(operation: str, output: str | os.PathLike[str] | None, format: str) -> Path:
    if output is None:
        return default_output(operation, format)
    text = os.fspath(output)
    if format != "savedmodel" and text.endswith(("/", os.sep)):
        # Path() would drop the slash and write a file where the user named a folder.
        raise ConfigError(
            f"output path {text!r} names a folder, not a {_SUFFIX[format]} file"
        )
    return Path(text)


def campaign_table(
    database: Database, config: CampaignConfig | None, op: Operation
) -> Table | None:
    """A table operation's rows as the campaign stored them (None for any other operation).

    Raises:
        ConfigError: the campaign records the table but the database holds none.
    """
    if not op.table or config is None:
        return None
    source = config.datasets.get(op.name)
    if source is None:
        return None
    stored = database.datasets.load(config.name, op.name)
    if stored is None:
        raise ConfigError(
            f"campaign {config.name!r} records the table {op.name!r}, but the database holds "
            "no such table"
        )
    return source.with_blob(stored[0]).table


def probe_inputs(
    op: Operation, spec: DataSpec, table: Table | None = None
) -> npt.NDArray[np.float64]:
    """The rows an export is compared on, (n, arity) float64 in the operation's input order.

    The campaign's held-out test rows and its extrapolation rows (for a table, its own rows),
    zeros and signed zeros with each input alone at a few values, and the corners of the
    training ranges and bands (for a formula, only rows in its domain). A table's operation
    without its `table` gets the generic `sweep.nets.portable.default_probe`.
    """
    if op.table and table is None:
        return default_probe(op.arity)
    dataset = make_dataset(op, spec, table)
    bounds = dataset.bounds
    edges = np.asarray(
        [[getattr(b, side) for b in bounds] for side in ("low", "high", "band_low", "band_high")],
        dtype=np.float64,
    ).reshape(-1, op.arity)
    special = np.concatenate([_signed_zeros(op.arity), edges])
    if not op.table:
        special = special[op.valid_rows(special)]
    return np.concatenate(
        [
            np.asarray(dataset.x_test, dtype=np.float64),
            special,
            np.asarray(dataset.x_extrapolation, dtype=np.float64),
        ]
    )


def _signed_zeros(arity: int) -> npt.NDArray[np.float64]:
    """All zeros, a -0.0 in each column, and each column alone at +-1, +-5, +-123 (the others 0,
    or -0.0): where a sign or a zero is mishandled, an export parts from the model."""
    rows = [[0.0] * arity]
    for k in range(arity):
        rows.append([-0.0 if i == k else 0.0 for i in range(arity)])
    for value in (1.0, 5.0, 123.0):
        for k in range(arity):
            rows.append([value if i == k else 0.0 for i in range(arity)])
            rows.append([-value if i == k else 0.0 for i in range(arity)])
            if arity > 1:
                rows.append([value if i == k else -0.0 for i in range(arity)])
    return np.asarray(rows, dtype=np.float64)


def _metadata(entry: ModelEntry, op: Operation) -> dict[str, str]:
    return {
        "operation": entry.operation,
        "inputs": ",".join(op.inputs),
        "campaign": entry.campaign,
        "registry_version": str(entry.version),
        "registry_sha256": entry.sha256,
        "trial": str(entry.trial_number),
        "architecture": str(entry.params.get("architecture", "")),
    }


# --- SavedModel folders ----------------------------------------------------------------------


def _looks_like_a_pulled_savedmodel(path: Path) -> bool:
    """A folder of numbered versions, each a SavedModel: what `pull --format savedmodel`
    writes. Only such a folder is replaced with --force (never a home directory by mistake)."""
    entries = list(path.iterdir())
    return bool(entries) and all(
        e.name.isdigit() and e.is_dir() and not e.is_symlink()
        and (e / "saved_model.pb").is_file()
        for e in entries
    )


def _check_savedmodel_output(path: Path, *, force: bool) -> None:
    shown = str(path)
    if path.is_symlink():
        raise ConfigError(f"output path {shown!r} is a symbolic link; refusing to write through it")
    if not path.parent.is_dir():
        raise ConfigError(f"output folder {str(path.parent)!r} does not exist")
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"output path {shown!r} is a file; a SavedModel is a folder")
    if not force:
        raise ConfigError(f"output path {shown!r} exists; pass --force to overwrite it")
    if not _looks_like_a_pulled_savedmodel(path):
        raise ConfigError(
            f"output path {shown!r} is a folder that holds more than SavedModel versions; "
            "refusing to replace it (--force replaces only a folder `sweep pull` wrote)"
        )


def _write_savedmodel(
    model: object,
    entry: ModelEntry,
    path: Path,
    probe: npt.NDArray[np.float64],
    op: Operation,
    *,
    force: bool,
) -> tuple[Comparison, int]:
    """Export to a temporary folder next to `path`, check its answers, then move it in place.

    The layout is TF Serving's: ``path/<registry version>/saved_model.pb``, so TF Serving with
    ``--model_base_path=path`` reports the registry's version number.
    """
    from sweep.nets.exporting import export_savedmodel, rounding_bound, savedmodel_answers
    from sweep.nets.portable import check_answers
    from sweep.nets.training import predict

    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide it from a TF Serving user
        version_dir = temp / str(entry.version)
        export_savedmodel(model, version_dir)
        reference = predict(model, probe)
        comparison = check_answers(
            reference,
            savedmodel_answers(version_dir, probe),
            integer_valued=op.integer_valued,
            label=f"the SavedModel of {entry.operation} version {entry.version}",
            rounding=rounding_bound(model, probe, reference),
        )
        size = sum(f.stat().st_size for f in temp.rglob("*") if f.is_file())
        _move_into_place(temp, path, force=force)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return comparison, size


def _move_into_place(temp: Path, path: Path, *, force: bool) -> None:
    """One rename (plus, with --force, one aside): a reader sees the old folder or the new."""
    if force and path.is_dir() and not path.is_symlink():
        _check_savedmodel_output(path, force=True)  # still ours to replace
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        aside.rmdir()
        path.rename(aside)
        try:
            temp.rename(path)
        except BaseException:
            aside.rename(path)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"output path {str(path)!r} appeared meanwhile; nothing was written")
    try:
        # rename() replaces nothing but an empty folder: a file, a link or a folder with
        # anything in it that appeared since the check makes it fail.
        temp.rename(path)
    except OSError as e:
        raise ConfigError(
            f"output path {str(path)!r} appeared meanwhile ({e.strerror}); nothing was written"
        ) from None
