"""What a person sees in optuna-dashboard for each study: a note on the best model, and the
model and a plot attached as artifacts.

The note is written with `optuna_dashboard.save_note`, the artifacts in the format of
`optuna.artifacts.upload_artifact` (file first, then its record:
`sweep.search.record_artifact`), so a stock ``optuna-dashboard URL --artifact-dir DIR`` shows
them as well as `sweep dashboard` does.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from storage import ModelEntry
from sweep import settings
from sweep.errors import PublishError, SweepError, first_line
from sweep.nets import ExportableModel, Predictor
from sweep.problem.data import Dataset
from sweep.problem.metrics import evaluate
from sweep.problem.sampling import Bounds
from sweep.publishing.artifacts import (
    ArtifactStore,
    artifact_place,
    attach_artifact,
    open_artifact_store,
)
from sweep.publishing.format import format_value as _fmt
from sweep.publishing.summary import BestRow
from sweep.search import PromotedModel, find_trial, storage_of
from sweep.settings import ArtifactPlace

__all__ = [
    "band_caption",
    "default_artifact_dir",
    "extrapolation_plot",
    "input_rows",
    "inputs_text",
    "publish_best",
    "publisher",
    "range_text",
    "row_noun",
    "shared_bounds",
    "study_note",
]


def default_artifact_dir() -> ArtifactPlace:
    """``$SWEEP_ARTIFACTS``, else ``./sweep-artifacts``: the folder (the same volume in
    docker-compose) or the bucket (``s3://BUCKET/PREFIX``) the sweep and the dashboard share."""
    return settings.current().artifacts


# --- study note and artifacts -----------------------------------------------------------------


def _code(value: Any) -> str:
    """Markdown inline code; backticks inside would end it early."""
    return "`" + str(value).replace("`", "'").replace("|", "/") + "`"


# --- inputs and their ranges, as text (the note, the plot's title, the report) ----------------


def _number(value: float) -> str:
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.6g}"


def range_text(low: float, high: float, *, table: bool = False, band: bool = False) -> str:
    """Drawn inputs are half-open ``[low, high)``; a table's rows are in ``[low, high]`` and its
    extrapolation rows above the training range, ``(high, max]`` (``none above high`` for an
    input whose largest value is in the training range)."""
    if not table:
        return f"[{_number(low)}, {_number(high)})"
    if band:
        return f"({_number(low)}, {_number(high)}]" if low < high else f"none above {_number(low)}"
    return f"[{_number(low)}, {_number(high)}]"


def shared_bounds(bounds: Sequence[Bounds]) -> bool:
    """Every input has the same kind, range and band (the original question's a, b)."""
    first = bounds[0] if bounds else None
    return first is not None and all(
        (b.kind, b.low, b.high, b.band_low, b.band_high)
        == (first.kind, first.low, first.high, first.band_low, first.band_high)
        for b in bounds
    )


def inputs_text(bounds: Sequence[Bounds], *, table: bool = False, band: bool = False) -> str:
    """``a, b in [0, 500)`` when the inputs share a range, else ``n in [1, 5), R in [8, 9)``
    (`band`: the extrapolation band instead of the training range)."""

    def one(b: Bounds) -> str:
        low, high = (b.band_low, b.band_high) if band else (b.low, b.high)
        return range_text(low, high, table=table, band=band)

    if not bounds:
        return ""
    if shared_bounds(bounds):
        return f"{', '.join(b.name for b in bounds)} in {one(bounds[0])}"
    return ", ".join(f"{b.name} in {one(b)}" for b in bounds)


def input_rows(bounds: Sequence[Bounds], *, table: bool = False) -> list[tuple[str, str, str, str]]:
    """Per input: its name, kind, training range and extrapolation band, as text."""
    return [
        (
            b.name,
            b.kind,
            range_text(b.low, b.high, table=table, band=False),
            range_text(b.band_low, b.band_high, table=table, band=True),
        )
        for b in bounds
    ]


def _compact(bounds: Sequence[Bounds]) -> bool:
    """Short enough to name every range inline (else a table lists them)."""
    return len(bounds) <= 2 or shared_bounds(bounds)


def row_noun(arity: int) -> str:
    """What one row of inputs is called: a value, a pair, or a row (three inputs or more)."""
    return {1: "values", 2: "pairs"}.get(arity, "rows")


def study_note(
    entry: ModelEntry,
    dataset: Dataset,
    artifacts: Mapping[str, str] | None = None,
) -> str:
    """The Markdown note for a study: what won, how, and how well, from the registry entry."""
    row = BestRow.from_entry(entry)
    p = row.params
    op = dataset.operation
    bounds = dataset.bounds
    table = op.table
    parameters = p.get("parameters")
    rows = [
        ("operation", f"{_code(op.name)}: {_code(op.description)}"),
        ("inputs", f"{len(op.inputs)}, in this order: {_code(', '.join(op.inputs))}"),
        ("architecture", f"{_code(row.architecture)}"
         + (f" ({parameters:,} parameters)" if isinstance(parameters, int) else "")),
        ("normalisation (input / target)",
         f"{_code(p.get('input_normalization', '?'))} / "
         f"{_code(p.get('target_normalization', '?'))}"),
        ("learning rate", f"{_fmt(row.learning_rate, 3)} ({_fmt(p.get('lr_schedule'))})"),
        ("loss, batch size", f"{_fmt(p.get('loss'))}, {_fmt(p.get('batch_size'))}"),
        ("registry", f"version {entry.version}, sha256 {_code(entry.sha256[:12])}, "
         f"{entry.size_bytes:,} bytes"),
        ("validation objective", _fmt(row.validation_objective, 6)),
    ]
    lines = [
        f"## Best model: trial {entry.trial_number}, registry version {entry.version}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
        "### Inputs",
        "",
        "| input | kind | training range | extrapolation band |",
        "|---|---|---|---|",
        *(f"| {_code(name)} | {kind} | {low} | {band} |"
          for name, kind, low, band in input_rows(bounds, table=table)),
    ]
    if table:
        count = sum(len(y) for y in (dataset.y_train, dataset.y_val, dataset.y_test,
                                     dataset.y_extrapolation))
        lines += ["", f"From a table of {count:,} rows: the extrapolation rows lie above the "
                  "training range of at least one input."]
    noun = row_noun(op.arity)
    if table:
        in_range = f"unseen {noun} in the training ranges"
        beyond = "extrapolation rows (above the training range of an input)"
    elif _compact(bounds):
        in_range = f"unseen in-range {noun}, {inputs_text(bounds)}"
        beyond = f"extrapolation band, {inputs_text(bounds, band=True)}"
    else:
        in_range = f"unseen in-range {noun} (ranges above)"
        beyond = "extrapolation band (bands above)"
    lines += [
        "",
        "### Errors in original units",
        "",
        f"| set | MAE | median relative error | max absolute error | hit rate | {noun} |",
        "|---|---|---|---|---|---|",
    ]
    for label, errors in (
        (
            in_range,
            (row.mae, row.median_relative_error, row.max_absolute_error, row.hit_rate, row.count),
        ),
        (
            beyond,
            (
                row.extrapolation_mae,
                row.extrapolation_median_relative_error,
                row.extrapolation_max_absolute_error,
                row.extrapolation_hit_rate,
                row.extrapolation_count,
            ),
        ),
    ):
        lines.append(f"| {label} | " + " | ".join(_fmt(value) for value in errors) + " |")
    hit = "rounded prediction equals the truth" if op.integer_valued else "relative error ≤ 1e-6"
    lines += ["", f"A hit: {hit}."]
    if artifacts:
        where = ", ".join(_code(name) for name in artifacts)
        lines += ["", f"Artifacts ({next(iter(artifacts.values()))}): {where}."]
    lines += [
        "",
        f"_Written by `sweep` at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; "
        "`sweep pull` fetches this model._",
    ]
    return "\n".join(lines) + "\n"


def _frozen_trial(study: optuna.Study, trial_number: int) -> FrozenTrial:
    trial = find_trial(study, trial_number)
    if trial is None:
        raise PublishError(f"study {study.study_name!r} has no trial {trial_number}")
    return trial


def publish_best(
    study: optuna.Study,
    trial_number: int,
    entry: ModelEntry,
    model: ExportableModel,
    dataset: Dataset,
    artifact_dir: str | os.PathLike[str] | ArtifactPlace | None,
) -> None:
    """Refresh the study note for a newly promoted model; attach the model and a plot as artifacts.

    Call it right after a promotion, while the trial is still running (inside the objective):
    Optuna only attaches artifacts to unfinished trials. For a finished trial the artifacts go to
    the study instead, with the note naming the trial.

    Args:
        study: The operation's study.
        trial_number: The promoted trial.
        entry: The registry entry `promote` returned.
        model: The promoted model (the plot shows its predictions on the extrapolation band).
        dataset: The operation's dataset.
        artifact_dir: The artifact folder or bucket shared with the dashboard; None writes the
            note only.

    Raises:
        PublishError: The note or the artifacts could not be written (one line; the caller
            should warn and go on: the model is already in the registry).
    """
    artifacts: dict[str, str] = {}
    target: FrozenTrial | optuna.Study | None = None
    place_error: SweepError | None = None
    store: ArtifactStore | None = None
    place = None if artifact_dir is None else artifact_place(artifact_dir)
    if place is not None:
        try:
            store = open_artifact_store(place, PublishError, create=True)
        except SweepError as e:
            place_error = e  # The note is still worth writing; report the place after it.
        else:
            trial = _frozen_trial(study, trial_number)
            target = study if trial.state.is_finished() else trial
            where = "on the study" if target is study else f"on trial {trial_number}"
            stem = f"{study.study_name}-v{entry.version}"
            artifacts = {f"{stem}.keras": where, f"{stem}-extrapolation.png": where}
    try:
        _save_note(study, study_note(entry, dataset, artifacts))
    except PublishError:
        raise
    except Exception as e:  # Storage errors of every kind: publishing is best effort.
        raise PublishError(f"cannot save the note of {study.study_name!r}: {first_line(e)}") from e
    if place_error is not None:
        raise place_error
    if store is None or target is None:
        return
    with tempfile.TemporaryDirectory(prefix="sweep-artifacts-") as scratch:
        model_path = Path(scratch) / f"{study.study_name}-v{entry.version}.keras"
        plot_path = Path(scratch) / f"{study.study_name}-v{entry.version}-extrapolation.png"
        try:
            plot_path.write_bytes(extrapolation_plot(model, dataset, entry))
            model_path.write_bytes(model.to_bytes())
        except (SweepError, OSError) as e:
            raise PublishError(f"cannot prepare the artifacts: {first_line(e)}") from e
        attached: dict[str, str] = {}
        try:
            for path in (model_path, plot_path):
                attach_artifact(store, path, target, storage_of(study))
                attached[path.name] = artifacts[path.name]
        except Exception as e:
            if attached != artifacts:  # The note must not promise what is not there.
                with contextlib.suppress(Exception):
                    _save_note(study, study_note(entry, dataset, attached))
            raise PublishError(
                f"cannot attach artifacts to {study.study_name!r} in {str(place)!r}: "
                f"{first_line(e)}"
            ) from e


def _save_note(study: optuna.Study, body: str) -> None:
    """`optuna_dashboard.save_note`, imported late: the sweep runs without the dashboard extra."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        raise PublishError(
            "optuna-dashboard is not installed; pip install optuna-dashboard (a dependency of "
            "neural-arithmetic-sweep: reinstall it)"
        ) from None
    save_note(study, body)


def extrapolation_plot(model: Predictor, dataset: Dataset, entry: ModelEntry | None) -> bytes:
    """PNG: the model's predictions against the truth on the extrapolation band.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    from sweep.publishing.plots import prediction_png  # matplotlib only when a plot is drawn

    x, y = dataset.x_extrapolation, dataset.y_extrapolation
    predictions = model.predict(np.asarray(x, dtype=np.float64))
    metrics = evaluate(predictions, y, dataset.operation.integer_valued)
    op = dataset.operation
    version = f", registry version {entry.version} (trial {entry.trial_number})" if entry else ""
    return prediction_png(
        y,
        predictions,
        title=f"{op.name} ({op.description}) on {band_caption(dataset.bounds, op.table)}{version}",
        subtitle=(
            f"hit rate {metrics.hit_rate:.3g}, median relative error "
            f"{metrics.median_relative_error:.3g}, MAE {metrics.mae:.4g} "
            f"({metrics.count} {row_noun(op.arity)})"
        ),
        integer_valued=op.integer_valued,
    )


def band_caption(bounds: Sequence[Bounds], table: bool = False) -> str:
    """``the extrapolation band [500, 1000)`` for inputs that share it, the band of each
    input for two, and in words beyond (the note and the report list them)."""
    if shared_bounds(bounds) and not table:
        first = bounds[0]
        shown = range_text(first.band_low, first.band_high, table=False, band=True)
        return f"the extrapolation band {shown}"
    if bounds and _compact(bounds):
        return f"the extrapolation band ({inputs_text(bounds, table=table, band=True)})"
    if table:
        return "the table's extrapolation rows"
    if not bounds:
        return "the extrapolation band"
    return f"the extrapolation band of its {len(bounds)} inputs"


def publisher(
    artifact_dir: str | os.PathLike[str] | ArtifactPlace | None,
) -> Callable[[PromotedModel], None]:
    """The campaign's promotion hook: `publish_best` into `artifact_dir`."""

    def publish(promoted: PromotedModel) -> None:
        publish_best(
            promoted.study,
            promoted.trial_number,
            promoted.entry,
            promoted.model,
            promoted.dataset,
            artifact_dir,
        )

    return publish
