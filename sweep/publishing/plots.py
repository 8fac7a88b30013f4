"""Figures for the dashboard's artifacts and the HTML report, rendered straight to PNG bytes.

Built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot: no global backend, no
display, no figure registry to leak from a long-running process. Inputs are plain numbers, so
this module knows nothing of Optuna or Keras.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError

try:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, MaxNLocator
except ImportError:  # pragma: no cover - depends on the installed extras
    # A SweepError, so `sweep report` says what to install in one line.
    raise ConfigError(
        "plots need matplotlib, a dependency of neural-arithmetic-sweep; pip install matplotlib"
    ) from None

# Colour-blind-safe (Okabe-Ito); the same meaning in every figure.
BLUE, ORANGE, RED, GREY, GREEN = "#0072B2", "#E69F00", "#D55E00", "#999999", "#009E73"
_TARGET_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442")
_DPI = 100
# Characters of an 11-point title that fit across the prediction figure.
_TITLE_WIDTH = 100


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _wants_log(values: Sequence[float]) -> bool:
    """Log scale when every value is positive and they span more than two decades."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) > 100


def _style(axes: Axes) -> None:
    axes.grid(True, which="major", color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


@dataclass(frozen=True)
class HistoryPoint:
    """One trial in the optimisation history; `value` is None for a trial without one."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None


def history_png(points: Sequence[HistoryPoint], objective_label: str) -> bytes:
    """Objective per trial, the running best, and pruned/failed trials marked apart."""
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    axes = figure.add_subplot()
    _style(axes)
    complete = [p for p in points if p.state == "COMPLETE" and p.value is not None]
    pruned = [p for p in points if p.state == "PRUNED" and p.value is not None]
    pruned_without_value = [p for p in points if p.state == "PRUNED" and p.value is None]
    failed = [p for p in points if p.state == "FAIL"] + pruned_without_value
    unfinished = [p for p in points if p.state in ("RUNNING", "WAITING")]
    values = [p.value for p in complete + pruned if p.value is not None]
    if complete:
        axes.scatter(
            [p.number for p in complete], [p.value or 0.0 for p in complete], s=22, color=BLUE,
            label=f"complete ({len(complete)})", zorder=3,
        )
        best: list[float] = []
        for p in sorted(complete, key=lambda p: p.number):
            assert p.value is not None
            best.append(p.value if not best else min(best[-1], p.value))
        numbers = [p.number for p in sorted(complete, key=lambda p: p.number)]
        last = max(p.number for p in points)
        axes.step(
            [*numbers, last], [*best, best[-1]], where="post", color=GREEN, linewidth=1.6,
            label="best so far", zorder=2,
        )
    if pruned:
        axes.scatter(
            [p.number for p in pruned], [p.value or 0.0 for p in pruned], s=30, marker="x",
            color=ORANGE, label=f"pruned, last reported ({len(pruned)})", zorder=3,
        )
    if failed:
        # No value to place them by: a tick along the bottom edge marks where they happened.
        axes.scatter(
            [p.number for p in failed], [0.02] * len(failed), s=40, marker="v", color=RED,
            transform=axes.get_xaxis_transform(), clip_on=False,
            label=f"failed / diverged ({len(failed)})", zorder=3,
        )
    if unfinished:
        axes.scatter(
            [p.number for p in unfinished], [0.02] * len(unfinished), s=30, marker="o",
            facecolors="none", edgecolors=GREY, transform=axes.get_xaxis_transform(),
            label=f"running ({len(unfinished)})", zorder=3,
        )
    if _wants_log(values):
        axes.set_yscale("log")
    axes.margins(y=0.08)
    if not values:
        axes.text(0.5, 0.5, "no trial reported a value", ha="center", va="center",
                  transform=axes.transAxes, color=GREY)
        axes.set_yticks([])
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if points:
        low, high = min(p.number for p in points), max(p.number for p in points)
        axes.set_xlim(low - 0.6, high + 0.6)
    axes.set_xlabel("trial number")
    axes.set_ylabel(objective_label)
    axes.set_title("Optimisation history", fontsize=11)
    # Below the axes, never on top of a trial.
    figure.legend(fontsize=8, loc="outside lower center", ncol=3, frameon=False)
    return _png(figure)


def importance_png(importances: Mapping[str, float], trials_used: int) -> bytes:
    """Horizontal bars, most important on top."""
    ranked = sorted(importances.items(), key=lambda item: item[1], reverse=True)[:12]
    names = [name for name, _ in ranked][::-1]
    shares = [share for _, share in ranked][::-1]
    figure = Figure(figsize=(6.4, 0.9 + 0.28 * max(len(names), 3)), layout="constrained")
    axes = figure.add_subplot()
    _style(axes)
    axes.grid(False, axis="y")
    axes.barh(names, shares, color=BLUE, height=0.6)
    for y, share in enumerate(shares):
        axes.text(share, y, f" {share:.2f}", va="center", fontsize=8)
    axes.set_xlim(0, max([*shares, 0.01]) * 1.18)
    axes.set_xlabel("importance (PED-ANOVA, normalised to sum 1)")
    axes.set_title(f"Parameter importances ({trials_used} complete trials)", fontsize=11)
    return _png(figure)


def normalisation_png(
    best: Mapping[tuple[str, str], float],
    input_schemes: Sequence[str],
    target_schemes: Sequence[str],
    objective_label: str,
    outcomes: Mapping[tuple[str, str], str] | None = None,
) -> bytes:
    """Best error per (input, target) normalisation: one bar group per input scheme.

    `outcomes` labels the combinations that were tried but never reached a value ("diverged",
    "failed"): for multiply without normalisation that *is* the answer, so it must show.
    """
    outcomes = outcomes or {}
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    axes = figure.add_subplot()
    _style(axes)
    axes.grid(False, axis="x")
    width = 0.8 / max(len(target_schemes), 1)
    values = list(best.values())
    log = _wants_log(values)
    for j, target in enumerate(target_schemes):
        xs, heights = [], []
        for i, scheme in enumerate(input_schemes):
            x = i - 0.4 + width * (j + 0.5)
            value = best.get((scheme, target))
            if value is None or not math.isfinite(value):
                outcome = outcomes.get((scheme, target))
                axes.text(x, 0.01, outcome or "not tried", rotation=90, ha="center",
                          va="bottom", fontsize=8 if outcome else 7,
                          color=RED if outcome else GREY, fontweight="bold" if outcome else None,
                          transform=axes.get_xaxis_transform())
                continue
            xs.append(x)
            heights.append(value)
        colour = _TARGET_COLOURS[j % len(_TARGET_COLOURS)]
        # An empty bar still gives the legend its colour when every try of a target diverged.
        axes.bar(xs, heights, width=width * 0.92, color=colour, label=f"target: {target}")
        for x, value in zip(xs, heights, strict=True):
            axes.text(x, value, f"{value:.3g}", ha="center", va="bottom", fontsize=7)
    finite = [v for v in values if math.isfinite(v)]
    if log:
        axes.set_yscale("log")
        # Room above the tallest bar for its label; bars start a decade below the lowest.
        axes.set_ylim(min(finite) / 10, max(finite) * 4)
    elif finite:
        axes.set_ylim(0, max(finite) * 1.15)
    axes.set_xticks(range(len(input_schemes)), [f"input: {s}" for s in input_schemes])
    axes.set_ylabel(f"best {objective_label}" + (" (log)" if log else ""))
    axes.set_xlim(-0.5, len(input_schemes) - 0.5)
    axes.set_title("Best validation error per normalisation scheme", fontsize=11)
    figure.legend(fontsize=8, loc="outside lower center", ncol=len(target_schemes), frameon=False)
    return _png(figure)


def prediction_png(
    y_true: npt.NDArray[np.float64],
    y_pred: npt.NDArray[np.float64],
    *,
    title: str,
    subtitle: str,
    integer_valued: bool,
) -> bytes:
    """Predicted vs true (left) and the error against the truth (right)."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    finite = np.isfinite(y_pred)
    truth, predicted = y_true[finite], y_pred[finite]
    figure = Figure(figsize=(8.8, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    for axes in (left, right):
        _style(axes)
    if truth.size:
        low = float(min(truth.min(), predicted.min()))
        high = float(max(truth.max(), predicted.max()))
        left.plot([low, high], [low, high], color=GREY, linewidth=1, label="exact (y = x)")
        left.scatter(truth, predicted, s=8, color=BLUE, alpha=0.6, label="model")
        left.legend(fontsize=8, loc="upper left")
        error = predicted - truth
        right.axhline(0, color=GREY, linewidth=1)
        if integer_valued and float(np.abs(error).max()) < 50:  # else too thin to see
            right.axhspan(-0.5, 0.5, color=GREEN, alpha=0.15, label="rounds to the truth")
            right.legend(fontsize=8, loc="best")
        right.scatter(truth, error, s=8, color=ORANGE, alpha=0.6)
        # 300k, 400k... instead of 300000400000 running into each other (multiply, square).
        big = EngFormatter(sep="")
        if float(np.abs(truth).max()) >= 1e4:
            for axis in (left.xaxis, left.yaxis, right.xaxis):
                axis.set_major_formatter(big)
        if float(np.abs(error).max()) >= 1e4:
            right.yaxis.set_major_formatter(big)
    if not finite.all():
        figure.text(0.99, 0.01, f"{int((~finite).sum())} non-finite predictions not shown",
                    ha="right", fontsize=8, color=RED)
    left.set_xlabel("true value")
    left.set_ylabel("predicted value")
    left.set_title("Predicted vs true", fontsize=10)
    right.set_xlabel("true value")
    right.set_ylabel("prediction - truth")
    right.set_title("Error", fontsize=10)
    # A long expression, or many inputs, would run off the figure: wrap at its width.
    figure.suptitle(f"{textwrap.fill(title, _TITLE_WIDTH)}\n{subtitle}", fontsize=11)
    return _png(figure)
