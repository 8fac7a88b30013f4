"""A `CampaignReport` as one self-contained HTML page (inline CSS, PNGs as data URIs, no script).

Rendering only: every value comes from `sweep.publishing.report_data`, so nothing here opens
storage, and the page can be rendered (and tested) from hand-made sections.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from typing import Any

from sweep.publishing.format import format_value as _fmt
from sweep.publishing.notes import (
    band_caption,
    input_rows,
    inputs_text,
    range_text,
    row_noun,
    shared_bounds,
)
from sweep.publishing.plots import history_png, importance_png, normalisation_png
from sweep.publishing.report_data import (
    MIN_TRIALS_FOR_IMPORTANCE,
    CampaignReport,
    Importances,
    NormalisationGrid,
    Section,
)

__all__ = ["render_report"]

Escape = Callable[[object], str]


def render_report(report: CampaignReport, *, password: str | None = None) -> str:
    """The page; `password` (the database's), should a message carry it, shows as ``***``."""
    escape = _escaper(password)
    body = [_section_html(section, escape) for section in report.sections]
    return _page(report, body, escape)


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


# --- one section ------------------------------------------------------------------------------


def _section_html(section: Section, escape: Escape) -> str:
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
    elif not study.trials:
        parts.append(_note("The study has no trials yet.", escape))
    else:
        figures.append(_history_figure(section, study.objective, escape))
        figures.append(_normalisation_figure(section.normalisation, study.objective, escape))
        if section.importances is not None:
            figures.append(_importance_figure(section.importances, escape))
    if section.best is not None:
        figures.append(_hyperparameters(section.best.params, section.best.trial, escape))
    figures.append(_prediction_figure(section, escape))
    parts.append('<div class="grid">' + "".join(figures) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _facts(section: Section, escape: Escape) -> str:
    items: list[tuple[str, str]] = []
    study = section.study
    if study is not None:
        summary = ", ".join(
            f"{count} {word}" for word, count in study.counts.items()
            if count or word in ("complete", "pruned")
        )
        noun = "trial" if study.trials == 1 else "trials"
        items.append(("study", f"{study.name}: {study.trials} {noun} ({summary})"))
        items.append(("objective", study.objective))
    table = section.operation is not None and section.operation.table
    bounds = section.inputs
    spec = section.data
    if spec is not None:
        size = "every row of its table" if table else f"{spec.examples} examples"
        if bounds and shared_bounds(bounds) and not table:
            band = range_text(bounds[0].band_low, bounds[0].band_high)
            items.append(("data", f"{inputs_text(bounds)}, {size}, seed {spec.seed}; "
                          f"extrapolation band {band}"))
        else:
            items.append(("data", f"{size}, seed {spec.seed}"))
    row = section.best
    if row is not None:
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
    if bounds:
        rows += f"<tr><th>inputs</th><td>{_inputs_table(section, escape)}</td></tr>"
    return f'<table class="facts">{rows}</table>'


def _inputs_table(section: Section, escape: Escape) -> str:
    """Each input in the model's order: its kind, training range and extrapolation band."""
    table = section.operation is not None and section.operation.table
    head = "".join(f"<th>{h}</th>" for h in ("input", "kind", "training range",
                                             "extrapolation band"))
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>"
        for cells in input_rows(section.inputs, table=table)
    )
    note = ("<p class=\"muted\">A table's extrapolation rows lie above the training range of "
            "at least one input.</p>") if table else ""
    return f'<table class="inputs"><tr>{head}</tr>{body}</table>{note}'


_PARAM_ORDER = (
    "architecture", "parameters", "family", "degree", "negative_powers", "half_powers",
    "snap_output", "hidden_layers", "activation", "input_normalization",
    "target_normalization", "learning_rate", "lr_schedule", "batch_size", "loss", "epochs",
    "refit_output",
)


def _hyperparameters(params: dict[str, Any], trial: int, escape: Escape) -> str:
    """The winner's full recipe, next to the importances that say which parts of it mattered."""
    keys = [k for k in _PARAM_ORDER if k in params] + sorted(set(params) - set(_PARAM_ORDER))
    rows = "".join(
        f"<tr><th>{escape(key.replace('_', ' '))}</th>"
        f"<td>{escape(_fmt_param(params[key]))}</td></tr>"
        for key in keys
    )
    return (
        f'<div class="panel"><h3>Hyperparameters of the best model (trial {trial})'
        f'</h3><table class="facts">{rows}</table></div>'
    )


def _fmt_param(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "none (linear model)"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _fmt(value)


def _history_figure(section: Section, label: str, escape: Escape) -> str:
    png = history_png(section.history, label)
    return _figure(
        png, "optimisation history",
        f"{label} per trial; the line is the best so far. Pruned trials are placed at the last "
        "value they reported; failed or diverged ones are marked along the bottom.",
        escape,
    )


def _normalisation_figure(grid: NormalisationGrid | None, label: str, escape: Escape) -> str:
    if grid is None:
        return _note("No trial reached a validation error yet, so there is nothing to compare "
                     "between normalisation schemes.", escape, "Normalisation:")
    png = normalisation_png(grid.best, grid.inputs, grid.targets, label, grid.outcomes)
    return _figure(
        png, "best validation error per normalisation scheme",
        f"Lowest {label} reached by any trial (complete, or pruned before its last epoch) for "
        "each input x target normalisation; in red, combinations whose every try diverged or "
        "failed. Large raw targets (multiply, square) are where normalising matters most.",
        escape,
    )


def _importance_figure(importances: Importances, escape: Escape) -> str:
    complete = importances.complete_trials
    if complete < MIN_TRIALS_FOR_IMPORTANCE:
        return _note(
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
            f"this study has {complete}.", escape, "Importances:",
        )
    if importances.error is not None:
        return _note(f"Parameter importances could not be computed: {importances.error}",
                     escape, "Importances:")
    shown = importances.shares
    if not shown or not any(shown.values()):
        return _note("Parameter importances are all zero: every complete trial scored the same.",
                     escape, "Importances:")
    return _figure(
        importance_png(shown, complete), "parameter importances",
        "How much each hyperparameter sets the best trials apart from the rest (Optuna's "
        "PED-ANOVA over complete trials; shares sum to 1). With few trials this is a hint, not "
        "a finding.",
        escape,
    )


def _prediction_figure(section: Section, escape: Escape) -> str:
    check = section.extrapolation
    if section.best is None:
        return _note("No model in the registry for this operation, so there is no prediction "
                     "plot.", escape, "Extrapolation:")
    if check.unknown_data or section.data is None:
        return _note("The operation or its data settings are unknown (no stored campaign and "
                     "no usable study attributes), so its data cannot be rebuilt.", escape,
                     "Extrapolation:")
    if check.load_error is not None or check.png is None:
        return _note(f"The model could not be loaded: {check.load_error}", escape,
                     "Extrapolation:")
    op = section.operation
    table = op is not None and op.table
    noun = row_noun(op.arity if op is not None else len(section.inputs))
    caveat = (" Caution: the rebuilt data differs from the data the study recorded "
              "(fingerprint mismatch).") if check.fingerprint_mismatch else ""
    return _figure(
        check.png, "predicted vs true on the extrapolation band",
        f"The registry's best model on {check.pairs} {noun} from "
        f"{band_caption(section.inputs, table)}, which training never saw. Left: each point "
        f"is one of them; on the grey line the model is exact. Right: the error against the "
        "truth." + caveat,
        escape, wide=True,
    )


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
table.inputs { margin: 0; font-size: 1em; }
table.inputs th { background: #fbfbfb; font-weight: 600; }
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


def _best_table(sections: Sequence[Section], escape: Escape) -> str:
    headers = ("operation", "version", "trial", "normalisation in/target", "architecture",
               "learning rate", "MAE", "median rel. error", "hit rate", "extrap. hit rate",
               "extrap. median rel. error", "sha256")
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    rows = []
    for section in sections:
        link = f'<a href="#op-{escape(section.name)}">{escape(section.name)}</a>'
        row = section.best
        if row is None:
            rows.append(f"<tr><td>{link}</td><td colspan=\"{len(headers) - 1}\">no model yet "
                        "(every trial pruned or failed, or none promoted)</td></tr>")
            continue
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


def _page(report: CampaignReport, body: Sequence[str], escape: Escape) -> str:
    generated = report.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    nav = "".join(f'<a href="#op-{escape(s.name)}">{escape(s.name)}</a>' for s in report.sections)
    title = f"Sweep report: campaign {report.campaign}"
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
        f'<p class="meta">{escape(report.shown_url)} · generated {escape(generated)} · optuna '
        f"{escape(report.optuna_version)}</p>",
        f"<nav>{nav}</nav>",
        "<h2>Best model per operation</h2>",
        "<p>From the model registry. MAE, median relative error and hit rate on unseen inputs "
        "in the training range; the extrapolation band lies just above it.</p>",
        _best_table(report.sections, escape),
        *body,
        "</body>",
        "</html>",
        "",
    ])
