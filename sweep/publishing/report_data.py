"""What a campaign's report shows, gathered from storage into plain values (no HTML).

Like optuna-dashboard, gathering is kept apart from rendering: this module reads Optuna's
studies and the model registry (and loads each best model once, to draw its extrapolation plot);
`sweep.publishing.report_html` turns a `CampaignReport` into the page without touching storage.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from storage import Database, ModelEntry, ModelRegistry, StorageError
from sweep.errors import ReportError, SweepError
from sweep.nets import SCHEMES
from sweep.problem.data import DataSpec, make_dataset
from sweep.problem.inputs import InputRange
from sweep.problem.operations import (
    BUILTIN_OPERATIONS,
    Operation,
    make_operation,
    make_table_operation,
)
from sweep.problem.sampling import Bounds, bounds_of, effective_ranges
from sweep.publishing.plots import HistoryPoint
from sweep.publishing.summary import BestRow
from sweep.search import CampaignConfig, load_campaign_config, open_existing_storage, study_name

__all__ = [
    "MIN_TRIALS_FOR_IMPORTANCE",
    "TRIAL_STATES",
    "CampaignReport",
    "Extrapolation",
    "Importances",
    "NormalisationGrid",
    "Section",
    "StudyFacts",
    "gather_report",
]

# fANOVA on fewer complete trials than this says more about the forest than about the space.
MIN_TRIALS_FOR_IMPORTANCE = 3

# How the page names each trial state, in the order it lists them.
TRIAL_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


@dataclass(frozen=True)
class StudyFacts:
    """An operation's study at a glance: its name, objective and trials per state."""

    name: str
    objective: str
    trials: int
    counts: dict[str, int]  # every word of TRIAL_STATES, in its order


@dataclass(frozen=True)
class NormalisationGrid:
    """Lowest validation error per (input, target) scheme, and the pairs that never got one."""

    best: dict[tuple[str, str], float]
    outcomes: dict[tuple[str, str], str]  # "diverged", "stopped" or "failed"
    inputs: list[str]
    targets: list[str]


@dataclass(frozen=True)
class Importances:
    """Parameter importances over complete trials, or why there are none."""

    complete_trials: int
    shares: dict[str, float] = field(default_factory=dict)  # finite shares only
    error: str | None = None  # Optuna could not compute them


@dataclass(frozen=True)
class Extrapolation:
    """The best model on the extrapolation band, or why it could not be shown.

    The plot is drawn here, as PNG bytes, because it needs the live model (loaded from the
    registry, so gathering's job); it is the same picture the study note carries.
    """

    png: bytes | None = None
    pairs: int = 0  # rows of the band (pairs for two inputs)
    fingerprint_mismatch: bool = False
    unknown_data: bool = False  # no operation or no data settings to rebuild the rows from
    load_error: str | None = None
    bounds: tuple[Bounds, ...] = ()  # the rebuilt dataset's, when it was rebuilt


@dataclass(frozen=True)
class Section:
    """Everything the page shows about one operation of the campaign."""

    name: str
    operation: Operation | None
    data: DataSpec | None
    # Per input: its training range and extrapolation band (the rebuilt dataset's, else the
    # study's record, else the operation's ranges over `data`); empty when none is known.
    inputs: tuple[Bounds, ...]
    problems: list[str]
    study: StudyFacts | None
    history: list[HistoryPoint]  # empty without trials
    normalisation: NormalisationGrid | None  # None: no trial reached a validation error
    importances: Importances | None  # None without trials
    best: BestRow | None
    extrapolation: Extrapolation

    @property
    def band(self) -> tuple[float, float] | None:
        """The extrapolation band every input shares (the original a, b), else None."""
        if not self.inputs or any(
            (b.band_low, b.band_high) != (self.inputs[0].band_low, self.inputs[0].band_high)
            for b in self.inputs
        ):
            return None
        return self.inputs[0].band_low, self.inputs[0].band_high


@dataclass(frozen=True)
class CampaignReport:
    """The whole page's content: where it came from, and a section per operation."""

    campaign: str
    shown_url: str  # password masked
    optuna_version: str
    generated_at: datetime
    sections: list[Section]


def gather_report(database: Database, campaign: str) -> CampaignReport:
    """Read everything the report shows from `database`.

    Raises:
        ReportError: the SQLite file does not exist; the campaign has neither studies nor
            models.
        storage.StorageError: The database cannot be reached or read.
    """
    storage = open_existing_storage(database, ReportError)
    try:
        registry = database.registry
        config = load_campaign_config(database.campaigns, campaign)
        entries = {e.operation: e for e in registry.best_all(campaign)}
        sections = gather_sections(
            storage, registry, campaign, config, entries, database=database
        )
    finally:
        storage.remove_session()
        storage.engine.dispose()
    if not sections:
        raise ReportError(
            f"campaign {campaign!r} has no studies and no models on {database.masked}; "
            "run `sweep run` first (or pass --campaign)"
        )
    return CampaignReport(
        campaign, database.masked, optuna.__version__, datetime.now(UTC), sections
    )


def gather_sections(
    storage: optuna.storages.BaseStorage,
    registry: ModelRegistry,
    campaign: str,
    config: CampaignConfig | None,
    entries: dict[str, ModelEntry],
    *,
    database: Database | None = None,
) -> list[Section]:
    """A section per operation: the configured ones first, then any other study or model.

    Each operation is the stored campaign's resolution of it (its inputs, ranges and integer
    flag); without a campaign, the study's record. `database` gives a table's rows, so that a
    table's model can be shown on them.
    """
    prefix = f"{campaign}."
    studies = {
        s.study_name[len(prefix):]: s.study_name
        for s in storage.get_all_studies()
        if s.study_name.startswith(prefix)
    }
    configured: dict[str, Operation] = {}
    if config is not None:
        configured = {op.name: op for op in config.resolved_operations()}
    names = list(dict.fromkeys([*configured, *sorted(studies), *sorted(entries)]))
    sections = []
    for name in names:
        problems: list[str] = []
        study = None
        if name in studies:
            study = optuna.load_study(
                study_name=study_name(campaign, name), storage=storage, sampler=None
            )
        attrs = study.user_attrs if study is not None else {}
        operation = configured.get(name)
        if operation is None and config is not None:
            operation = _campaign_operation(config, name, problems)
        if operation is None:
            operation = _operation_from_attrs(name, attrs, problems)
        data: DataSpec | None = None
        if config is not None:
            data = config.data
        elif isinstance(attrs.get("data"), dict):
            try:
                data = DataSpec.from_dict(attrs["data"])
            except SweepError as e:
                problems.append(f"the study's data settings are unusable: {e}")
        operation = _with_recorded_ranges(operation, data, attrs)
        context = _Context(registry, campaign, config, database)
        sections.append(
            _section(name, operation, data, problems, study, entries.get(name), context, attrs)
        )
    return sections


@dataclass(frozen=True)
class _Context:
    registry: ModelRegistry
    campaign: str
    config: CampaignConfig | None
    database: Database | None


def _section(
    name: str,
    operation: Operation | None,
    data: DataSpec | None,
    problems: list[str],
    study: optuna.Study | None,
    entry: ModelEntry | None,
    context: _Context,
    attrs: dict[str, Any],
) -> Section:
    trials = study.get_trials(deepcopy=False) if study is not None else []
    extrapolation = _extrapolation(name, operation, data, study, entry, context)
    return Section(
        name=name,
        operation=operation,
        data=data,
        inputs=extrapolation.bounds or _recorded_bounds(attrs) or _operation_bounds(
            operation, data
        ),
        problems=problems,
        study=_study_facts(study, trials) if study is not None else None,
        history=[HistoryPoint(t.number, t.state.name, _reached_value(t)) for t in trials],
        normalisation=_normalisation_grid(trials) if trials else None,
        importances=_importances(study, trials) if study is not None and trials else None,
        best=BestRow.from_entry(entry) if entry is not None else None,
        extrapolation=extrapolation,
    )


def _campaign_operation(
    config: CampaignConfig, name: str, problems: list[str]
) -> Operation | None:
    """An operation the campaign no longer lists but can still resolve (a built-in over its
    data), as the campaign resolves it."""
    try:
        return config.operation(name)
    except SweepError as e:
        problems.append(f"the campaign cannot resolve {name!r}: {e}")
        return None


def _operation_from_attrs(
    name: str, attrs: dict[str, Any], problems: list[str]
) -> Operation | None:
    """Without a stored campaign: a built-in by name, the study's recorded expression, or its
    recorded table's inputs (the table itself is in no study), with its recorded integer flag."""
    operation: Operation | None = None
    expression = attrs.get("expression")
    raw_inputs = attrs.get("inputs")
    inputs: tuple[str, ...] = ()
    if isinstance(raw_inputs, list) and all(isinstance(i, str) for i in raw_inputs):
        inputs = tuple(raw_inputs)
    named = bool(inputs)
    try:
        if name in BUILTIN_OPERATIONS:
            operation = BUILTIN_OPERATIONS[name]
        elif isinstance(expression, str):
            operation = make_operation(name, expression)
        elif expression is None and named:
            operation = make_table_operation(name, inputs, "its target", False)
            operation = replace(operation, description=f"a table of {', '.join(inputs)}")
        if operation is not None and named and inputs != operation.inputs:
            operation = replace(operation, inputs=inputs)
    except SweepError as e:
        what = "expression" if isinstance(expression, str) else "inputs"
        problems.append(f"the study's {what} is not usable: {e}")
        return None
    recorded = attrs.get("integer_valued")
    if operation is not None and isinstance(recorded, bool):
        operation = replace(operation, integer_valued=recorded)
    return operation


def _recorded_bounds(attrs: dict[str, Any]) -> tuple[Bounds, ...]:
    """The study's ``ranges`` attribute: ``[name, kind, low, high, band_low, band_high]`` per
    input; empty when absent or malformed."""
    raw = attrs.get("ranges")
    if not isinstance(raw, list) or not raw:
        return ()
    out = []
    for item in raw:
        if not (
            isinstance(item, list) and len(item) == 6
            and isinstance(item[0], str) and isinstance(item[1], str)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item[2:])
        ):
            return ()
        out.append(Bounds(item[0], item[1], *(float(v) for v in item[2:])))
    return tuple(out)


def _with_recorded_ranges(
    operation: Operation | None, data: DataSpec | None, attrs: dict[str, Any]
) -> Operation | None:
    """An operation rebuilt from a study's record, given the ranges the study recorded (those
    of the original question's setting stay implicit, so its data are rebuilt as they were)."""
    if operation is None or operation.ranges or operation.table or data is None:
        return operation
    bounds = _recorded_bounds(attrs)
    if tuple(b.name for b in bounds) != operation.inputs:
        return operation
    legacy = [InputRange(b.name, data.low, data.high, "integer", legacy=True) for b in bounds]
    if bounds == bounds_of(legacy):
        return operation
    try:
        ranges = tuple(
            InputRange(
                b.name, b.low, b.high, "integer" if b.kind == "integer" else "real",
                extrapolation=(b.band_low, b.band_high),
            )
            for b in bounds
        )
    except SweepError:
        return operation
    return replace(operation, ranges=ranges)


def _operation_bounds(operation: Operation | None, data: DataSpec | None) -> tuple[Bounds, ...]:
    if operation is None or data is None or operation.table:
        return ()
    return bounds_of(effective_ranges(operation, data.low, data.high))


def _study_facts(study: optuna.Study, trials: Sequence[FrozenTrial]) -> StudyFacts:
    counts = dict.fromkeys(TRIAL_STATES.values(), 0)
    for trial in trials:
        counts[TRIAL_STATES[trial.state]] += 1
    label = study.user_attrs.get("objective")
    return StudyFacts(study.study_name, str(label) if label else "objective", len(trials), counts)


def _first_value(trial: FrozenTrial) -> float | None:
    if trial.values:
        value = float(trial.values[0])
        return value if math.isfinite(value) else None
    return None


def _reached_value(trial: FrozenTrial) -> float | None:
    """A complete trial's value; a pruned trial's last reported validation error."""
    if trial.state == TrialState.COMPLETE:
        return _first_value(trial)
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        value = float(trial.intermediate_values[max(trial.intermediate_values)])
        return value if math.isfinite(value) else None
    return None


def _best_reached(trial: FrozenTrial) -> float | None:
    """The lowest validation error a trial reached (pruned ones stopped early, but got there)."""
    if trial.state == TrialState.COMPLETE:
        return _first_value(trial)
    if trial.state == TrialState.PRUNED:
        finite = [float(v) for v in trial.intermediate_values.values() if math.isfinite(v)]
        return min(finite) if finite else None
    return None


def _schemes(trial: FrozenTrial) -> tuple[str, str] | None:
    """(input, target) scheme; from the params, or the model spec when a dimension was fixed."""
    spec = trial.user_attrs.get("model_spec")
    spec = spec if isinstance(spec, dict) else {}
    schemes = []
    for key in ("input_normalization", "target_normalization"):
        value = trial.params.get(key, spec.get(key))
        if not isinstance(value, str):
            return None
        schemes.append(value)
    return schemes[0], schemes[1]


def _ordered(values: Iterable[str]) -> list[str]:
    present = set(values)
    return [s for s in SCHEMES if s in present] + sorted(present - set(SCHEMES))


def _normalisation_grid(trials: Sequence[FrozenTrial]) -> NormalisationGrid | None:
    best: dict[tuple[str, str], float] = {}
    outcomes: dict[tuple[str, str], str] = {}
    for trial in trials:
        schemes, value = _schemes(trial), _best_reached(trial)
        if schemes is None:
            continue
        if value is not None:
            best[schemes] = min(value, best.get(schemes, math.inf))
        elif trial.state == TrialState.PRUNED:
            # Stopped before its first report: the objective's reason says why (diverged, slow).
            reason = str(trial.user_attrs.get("pruned_reason", "diverged"))
            outcomes[schemes] = "diverged" if reason.startswith("diverged") else "stopped"
        elif trial.state == TrialState.FAIL:
            outcomes.setdefault(schemes, "failed")
    if not best and not outcomes:
        return None
    tried = [*best, *outcomes]
    return NormalisationGrid(
        best, outcomes, _ordered(s for s, _ in tried), _ordered(t for _, t in tried)
    )


def _importances(study: optuna.Study, trials: Sequence[FrozenTrial]) -> Importances:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _first_value(t) is not None]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return Importances(len(complete))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                target=lambda t: t.values[0],
            )
    except (ValueError, RuntimeError) as e:
        return Importances(len(complete), error=str(e))
    shares = {k: float(v) for k, v in importances.items() if math.isfinite(v)}
    return Importances(len(complete), shares)


def _extrapolation(
    name: str,
    operation: Operation | None,
    data: DataSpec | None,
    study: optuna.Study | None,
    best: ModelEntry | None,
    context: _Context,
) -> Extrapolation:
    if best is None:
        return Extrapolation()
    if operation is None or data is None:
        return Extrapolation(unknown_data=True)
    if operation.table and (context.config is None or context.database is None):
        return Extrapolation(unknown_data=True)  # the rows are in the campaign's database
    from sweep.nets.saving import check_keras_version
    from sweep.nets.training import KerasTrainer
    from sweep.publishing.notes import extrapolation_plot
    from sweep.publishing.pulling import campaign_table

    try:
        entry, model_bytes = context.registry.fetch(context.campaign, name, best.version)
        label = f"{name} version {entry.version}"
        check_keras_version(entry.keras_version, label=label)
        model = KerasTrainer().load(model_bytes, label=label)
        table = None
        if context.database is not None:
            table = campaign_table(context.database, context.config, operation)
        dataset = make_dataset(operation, data, table)
    except (SweepError, StorageError) as e:
        return Extrapolation(load_error=str(e))
    stored = study.user_attrs.get("data_fingerprint") if study is not None else None
    return Extrapolation(
        png=extrapolation_plot(model, dataset, entry),
        pairs=len(dataset.y_extrapolation),
        fingerprint_mismatch=bool(stored and stored != dataset.fingerprint),
        bounds=dataset.bounds,
    )
