"""A campaign's report: one self-contained HTML file (inline CSS, PNGs as data URIs, no script).

It answers, per operation, which model won, how the search got there, which hyperparameters
mattered, which normalisation scheme made the difference, and how the winner does outside the
training range. It reads storage only: Optuna's studies and the model registry.
"""

from __future__ import annotations

import base64
import html
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from storage import ModelEntry, ModelRegistry, StorageError, mask_url, normalize_storage_url
from sweep.errors import ReportError, SweepError
from sweep.nets import SCHEMES
from sweep.problem.data import Dataset, DataSpec, extrapolation_band, make_dataset
from sweep.problem.operations import BUILTIN_OPERATIONS, Operation, make_operation
from sweep.publishing.format import format_value as _fmt
from sweep.publishing.outputs import check_output_path, write_atomically
from sweep.publishing.plots import HistoryPoint, history_png, importance_png, normalisation_png
from sweep.publishing.summary import BestRow
from sweep.search import CampaignConfig, load_campaign_config, open_existing_storage, study_name

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "build_report"]

# fANOVA on fewer complete trials than this says more about the forest than about the space.
MIN_TRIALS_FOR_IMPORTANCE = 3


@dataclass
class _Section:
    """Everything known about one operation of the campaign."""

    name: str
    operation: Operation | None = None
    study: optuna.Study | None = None
    entry: ModelEntry | None = None
    data: DataSpec | None = None
    problems: list[str] = field(default_factory=list)


def build_report(
    storage_url: str, campaign: str, output: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Write the campaign's HTML report to `output` and return it (an existing file only with
    `force`; never the database itself).

    Raises:
        ConfigError: `output` is not a path the report may be written to (see
            `sweep.publishing.outputs`). OutputError: the file system refused the write.
        ReportError: the SQLite file does not exist; the campaign has neither studies nor
            models.
        storage.StorageError: The database cannot be reached or read.
    """
    path = Path(output)
    url = normalize_storage_url(storage_url)
    check_output_path(path, force=force, storage_url=url)
    storage = open_existing_storage(url, ReportError)
    password = make_url(url).password
    escape = _escaper(str(password) if password else None)

    try:
        with ModelRegistry(url) as registry:
            config = load_campaign_config(registry, campaign)
            entries = {e.operation: e for e in registry.best_all(campaign)}
            sections = _sections(storage, campaign, config, entries)
            if not sections:
                raise ReportError(
                    f"campaign {campaign!r} has no studies and no models on {mask_url(url)}; "
                    "run `sweep run` first (or pass --campaign)"
                )
            body = [_section_html(section, registry, campaign, escape) for section in sections]
    finally:
        storage.remove_session()
        storage.engine.dispose()
    document = _page(campaign, mask_url(url), sections, body, escape)
    check_output_path(path, force=force, storage_url=url)  # again: building took a while
    write_atomically(path, document.encode("utf-8"), force=force)
    return path


# --- gathering --------------------------------------------------------------------------------


def _sections(
    storage: optuna.storages.BaseStorage,
    campaign: str,
    config: CampaignConfig | None,
    entries: dict[str, ModelEntry],
) -> list[_Section]:
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
        section = _Section(name, entry=entries.get(name))
        if name in studies:
            section.study = optuna.load_study(
                study_name=study_name(campaign, name), storage=storage, sampler=None
            )
        attrs = section.study.user_attrs if section.study is not None else {}
        section.operation = configured.get(name) or _operation_from_attrs(name, attrs, section)
        if config is not None:
            section.data = config.data
        elif isinstance(attrs.get("data"), dict):
            try:
                section.data = DataSpec.from_dict(attrs["data"])
            except SweepError as e:
                section.problems.append(f"the study's data settings are unusable: {e}")
        sections.append(section)
    return sections


def _operation_from_attrs(
    name: str, attrs: dict[str, Any], section: _Section
) -> Operation | None:
    """Without a stored campaign: a built-in by name, or the study's recorded expression."""
    if name in BUILTIN_OPERATIONS:
        return BUILTIN_OPERATIONS[name]
    expression = attrs.get("expression")
    if isinstance(expression, str):
        try:
            return make_operation(name, expression)
        except SweepError as e:
            section.problems.append(f"the study's expression is not usable: {e}")
    return None


def _objective_label(study: optuna.Study) -> str:
    label = study.user_attrs.get("objective")
    return str(label) if label else "objective"


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


def _normalisation(trial: FrozenTrial) -> tuple[str, str] | None:
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


# --- one section ------------------------------------------------------------------------------

Escape = Callable[[object], str]


def _escaper(password: str | None) -> Escape:
    """html.escape, and a password (should one reach a message) replaced before escaping."""

    def escape(value: object) -> str:
        text = str(value)
        if password:
            text = text.replace(password, "***")
        return html.escape(text, quote=True)

    return escape


def _img(png: bytes, alt: str, escape: Escape) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _figure(png: bytes, alt: str, caption: str, escape: Escape, wide: bool = False) -> str:
    cls = ' class="wide"' if wide else ""
    return (
        f"<figure{cls}>{_img(png, alt, escape)}<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _note(text: str, escape: Escape, title: str | None = None) -> str:
    head = f"<strong>{escape(title)}</strong> " if title else ""
    return f'<div class="note">{head}{escape(text)}</div>'


def _section_html(
    section: _Section, registry: ModelRegistry, campaign: str, escape: Escape
) -> str:
    op = section.operation
    description = op.description if op is not None else "unknown operation"
    parts = [
        f'<section id="op-{escape(section.name)}">',
        f"<h2>{escape(section.name)} <span class=\"muted\">{escape(description)}</span></h2>",
    ]
    parts.append(_facts(section, escape))
    for problem in section.problems:
        parts.append(_note(problem, escape, "Note:"))
    figures: list[str] = []
    study = section.study
    if study is None:
        parts.append(_note("No study for this operation yet: `sweep run` has not reached it.",
                           escape))
    else:
        trials = study.get_trials(deepcopy=False)
        label = _objective_label(study)
        if not trials:
            parts.append(_note("The study has no trials yet.", escape))
        else:
            figures.append(_history_figure(trials, label, escape))
            figures.append(_normalisation_figure(trials, label, escape))
            figures.append(_importance_figure(study, trials, escape))
    if section.entry is not None:
        figures.append(_hyperparameters(section.entry, escape))
    figures.append(_prediction_figure(section, registry, campaign, escape))
    parts.append('<div class="grid">' + "".join(figures) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _facts(section: _Section, escape: Escape) -> str:
    items: list[tuple[str, str]] = []
    if section.study is not None:
        trials = section.study.get_trials(deepcopy=False)
        counts = {state: 0 for state in TrialState}
        for trial in trials:
            counts[trial.state] += 1
        words = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
                 TrialState.FAIL: "failed", TrialState.RUNNING: "running",
                 TrialState.WAITING: "waiting"}
        summary = ", ".join(
            f"{counts[state]} {word}" for state, word in words.items()
            if counts[state] or state in (TrialState.COMPLETE, TrialState.PRUNED)
        )
        noun = "trial" if len(trials) == 1 else "trials"
        items.append(("study", f"{section.study.study_name}: {len(trials)} {noun} ({summary})"))
        items.append(("objective", _objective_label(section.study)))
    if section.data is not None:
        spec = section.data
        band = extrapolation_band(spec.low, spec.high)
        unary = section.operation is not None and section.operation.arity == 1
        variables = "a" if unary else "a, b"
        items.append(("data", f"{variables} in [{spec.low}, {spec.high}), {spec.examples} "
                      f"examples, seed {spec.seed}; extrapolation band [{band[0]}, {band[1]})"))
    entry = section.entry
    if entry is not None:
        row = BestRow.from_entry(entry)
        items.append(("best model", f"registry version {row.version} from trial "
                      f"{row.trial}: {row.architecture}, normalisation {row.normalisation}, "
                      f"learning rate {_fmt(row.learning_rate, 3)}, sha256 {row.sha256[:12]}"))
        items.append(("in range", f"MAE {_fmt(row.mae)}, median relative error "
                      f"{_fmt(row.median_relative_error)}, hit rate {_fmt(row.hit_rate)}"))
        items.append(("extrapolation", f"MAE {_fmt(row.extrapolation_mae)}, median "
                      f"relative error {_fmt(row.extrapolation_median_relative_error)}, "
                      f"hit rate {_fmt(row.extrapolation_hit_rate)}"))
    else:
        items.append(("best model", "none in the registry (every trial was pruned or failed, "
                      "or none has been promoted yet)"))
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in items)
    return f'<table class="facts">{rows}</table>'


_PARAM_ORDER = (
    "architecture", "parameters", "family", "degree", "negative_powers", "half_powers",
    "snap_output", "hidden_layers", "activation", "input_normalization",
    "target_normalization", "learning_rate", "lr_schedule", "batch_size", "loss", "epochs",
    "refit_output",
)


def _hyperparameters(entry: ModelEntry, escape: Escape) -> str:
    """The winner's full recipe, next to the importances that say which parts of it mattered."""
    params = entry.params
    keys = [k for k in _PARAM_ORDER if k in params] + sorted(set(params) - set(_PARAM_ORDER))
    rows = "".join(
        f"<tr><th>{escape(key.replace('_', ' '))}</th>"
        f"<td>{escape(_fmt_param(params[key]))}</td></tr>"
        for key in keys
    )
    return (
        f'<div class="panel"><h3>Hyperparameters of the best model (trial {entry.trial_number})'
        f'</h3><table class="facts">{rows}</table></div>'
    )


def _fmt_param(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "none (linear model)"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _fmt(value)


def _history_figure(trials: Sequence[FrozenTrial], label: str, escape: Escape) -> str:
    points = [HistoryPoint(t.number, t.state.name, _reached_value(t)) for t in trials]
    png = history_png(points, label)
    return _figure(
        png, "optimisation history",
        f"{label} per trial; the line is the best so far. Pruned trials are placed at the last "
        "value they reported; failed or diverged ones are marked along the bottom.",
        escape,
    )


def _normalisation_figure(trials: Sequence[FrozenTrial], label: str, escape: Escape) -> str:
    best: dict[tuple[str, str], float] = {}
    outcomes: dict[tuple[str, str], str] = {}
    for trial in trials:
        schemes, value = _normalisation(trial), _best_reached(trial)
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
        return _note("No trial reached a validation error yet, so there is nothing to compare "
                     "between normalisation schemes.", escape, "Normalisation:")
    tried = [*best, *outcomes]
    inputs = _ordered(s for s, _ in tried)
    targets = _ordered(t for _, t in tried)
    png = normalisation_png(best, inputs, targets, label, outcomes)
    return _figure(
        png, "best validation error per normalisation scheme",
        f"Lowest {label} reached by any trial (complete, or pruned before its last epoch) for "
        "each input x target normalisation; in red, combinations whose every try diverged or "
        "failed. Large raw targets (multiply, square) are where normalising matters most.",
        escape,
    )


def _importance_figure(
    study: optuna.Study, trials: Sequence[FrozenTrial], escape: Escape
) -> str:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _first_value(t) is not None]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return _note(
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
            f"this study has {len(complete)}.", escape, "Importances:",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                target=lambda t: t.values[0],
            )
    except (ValueError, RuntimeError) as e:
        return _note(f"Parameter importances could not be computed: {e}", escape,
                     "Importances:")
    shown = {k: float(v) for k, v in importances.items() if math.isfinite(v)}
    if not shown or not any(shown.values()):
        return _note("Parameter importances are all zero: every complete trial scored the same.",
                     escape, "Importances:")
    return _figure(
        importance_png(shown, len(complete)), "parameter importances",
        "How much each hyperparameter sets the best trials apart from the rest (Optuna's "
        "PED-ANOVA over complete trials; shares sum to 1). With few trials this is a hint, not "
        "a finding.",
        escape,
    )


def _prediction_figure(
    section: _Section, registry: ModelRegistry, campaign: str, escape: Escape
) -> str:
    if section.entry is None:
        return _note("No model in the registry for this operation, so there is no prediction "
                     "plot.", escape, "Extrapolation:")
    if section.operation is None or section.data is None:
        return _note("The operation or its data settings are unknown (no stored campaign and "
                     "no usable study attributes), so its data cannot be rebuilt.", escape,
                     "Extrapolation:")
    from sweep.nets.saving import check_keras_version
    from sweep.nets.training import KerasTrainer
    from sweep.publishing.notes import extrapolation_plot

    try:
        entry, data = registry.fetch(campaign, section.name, section.entry.version)
        label = f"{section.name} version {entry.version}"
        check_keras_version(entry.keras_version, label=label)
        model = KerasTrainer().load(data, label=label)
        dataset = make_dataset(section.operation, section.data)
    except (SweepError, StorageError) as e:
        return _note(f"The model could not be loaded: {e}", escape, "Extrapolation:")
    caveat = _fingerprint_caveat(section, dataset)
    png = extrapolation_plot(model, dataset, entry)
    band = extrapolation_band(section.data.low, section.data.high)
    return _figure(
        png, "predicted vs true on the extrapolation band",
        f"The registry's best model on {len(dataset.y_extrapolation)} pairs from the band "
        f"[{band[0]}, {band[1]}), which training never saw. Left: each point is one pair; on "
        "the grey line the model is exact. Right: the error against the truth." + caveat,
        escape, wide=True,
    )


def _fingerprint_caveat(section: _Section, dataset: Dataset) -> str:
    stored = section.study.user_attrs.get("data_fingerprint") if section.study else None
    if stored and stored != dataset.fingerprint:
        return (" Caution: the rebuilt data differs from the data the study recorded "
                "(fingerprint mismatch).")
    return ""


# --- the page ---------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0 auto; max-width: 1180px; padding: 1.5em 2em 4em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #0072B2; padding-bottom: .2em; margin-top: 2em; }
.muted, .meta { color: #666; font-weight: normal; }
.meta { margin-top: 0; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
table.best th { background: #f2f6fa; }
table.best td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.facts th { background: #f7f7f7; white-space: nowrap; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr));
        gap: 1em; align-items: start; }
h3 { font-size: 1em; margin: .2em 0 .4em; }
.panel { border: 1px solid #e5e5e5; border-radius: 4px; padding: .5em .8em; }
figure { margin: 0; border: 1px solid #e5e5e5; border-radius: 4px; padding: .5em; }
figure.wide { grid-column: 1 / -1; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: .85em; color: #555; margin-top: .3em; }
.note { background: #f6f6f6; border-left: 4px solid #999; padding: .6em .8em; font-size: .9em;
        margin: .5em 0; }
nav a { margin-right: .8em; }
"""


def _best_table(sections: Sequence[_Section], escape: Escape) -> str:
    headers = ("operation", "version", "trial", "normalisation in/target", "architecture",
               "learning rate", "MAE", "median rel. error", "hit rate", "extrap. hit rate",
               "extrap. median rel. error", "sha256")
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    rows = []
    for section in sections:
        link = f'<a href="#op-{escape(section.name)}">{escape(section.name)}</a>'
        entry = section.entry
        if entry is None:
            rows.append(f"<tr><td>{link}</td><td colspan=\"{len(headers) - 1}\">no model yet "
                        "(every trial pruned or failed, or none promoted)</td></tr>")
            continue
        row = BestRow.from_entry(entry)
        cells = [
            (str(row.version), True),
            (str(row.trial), True),
            (row.normalisation, False),
            (row.architecture, False),
            (_fmt(row.learning_rate, 3), True),
            (_fmt(row.mae), True),
            (_fmt(row.median_relative_error), True),
            (_fmt(row.hit_rate), True),
            (_fmt(row.extrapolation_hit_rate), True),
            (_fmt(row.extrapolation_median_relative_error), True),
            (row.sha256[:12], False),
        ]
        tds = "".join(
            f'<td class="num">{escape(text)}</td>' if numeric else f"<td>{escape(text)}</td>"
            for text, numeric in cells
        )
        rows.append(f"<tr><td>{link}</td>{tds}</tr>")
    return (f'<table class="best"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            "</tbody></table>")


def _page(
    campaign: str, shown_url: str, sections: Sequence[_Section], body: Sequence[str],
    escape: Escape,
) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    nav = "".join(f'<a href="#op-{escape(s.name)}">{escape(s.name)}</a>' for s in sections)
    title = f"Sweep report: campaign {campaign}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(shown_url)} · generated {escape(generated)} · optuna '
        f"{escape(optuna.__version__)}</p>",
        f"<nav>{nav}</nav>",
        "<h2>Best model per operation</h2>",
        "<p>From the model registry. MAE, median relative error and hit rate on unseen pairs "
        "in the training range; the extrapolation band lies just above it.</p>",
        _best_table(sections, escape),
        *body,
        "</body>",
        "</html>",
        "",
    ])
