"""The packing section's Markdown and its target line (the measuring is `benchmarks.packing`)."""

from __future__ import annotations

import math

from benchmarks._common import median
from benchmarks.packing import (
    EPOCH_CAP,
    TARGET_RATIO,
    PackingResult,
    ShapeSweep,
    bound,
    estimate_gain,
)
from benchmarks.tables import percent, significant, table, times

__all__ = ["PROPOSED", "render_section", "target_lines", "verdict"]

PROPOSED: tuple[int, ...] = (4, 16, 64)  # "Optuna proposes K trials of one shape"


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def _loads(result: PackingResult) -> str:
    loads = [float(r.load_before.split(",")[0]) for r in result.runs if r.load_before]
    loads += [float(s.load_before.split(",")[0]) for s in result.sweeps if s.load_before]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "—"


def _gains(result: PackingResult, pack: int | None) -> dict[str, float]:
    """Per operation, the median estimated gain over its sweeps."""
    return {
        operation: median(estimate_gain(result, s, pack) for s in result.sweeps
                          if s.operation == operation and not s.error)
        for operation in result.operations
    }


def verdict(result: PackingResult) -> tuple[bool, str]:
    """Kept or left out, and why, from the estimates.

    Kept only if packing the groups the search draws reaches the target: the search is then
    unchanged, so the best validation error is equal. K trials proposed per shape change the
    search, whose quality at an equal trial count this section does not measure, so they can
    show that the target is within reach but cannot keep packing.
    """
    def holds(gains: dict[str, float]) -> bool:
        return all(not math.isnan(g) and g >= TARGET_RATIO for g in gains.values())

    def listed(gains: dict[str, float]) -> str:
        return "; ".join(f"{o} {times(g)}" for o, g in gains.items())

    grouped = _gains(result, None)
    proposed = {k: _gains(result, k) for k in PROPOSED}
    bounds = {o: median(bound(s) for s in result.sweeps if s.operation == o and not s.error)
              for o in result.operations}
    enough = [k for k in PROPOSED if holds(proposed[k])]
    reach = holds(grouped)
    why = (
        f"packing the same-shape trials an MLP-only sweep draws would give {listed(grouped)}"
        f" the trials per minute (target {TARGET_RATIO:g}x; the search unchanged); Optuna"
        " proposing K trials per shape would give "
        + "; ".join(f"at K = {k} {listed(proposed[k])}" for k in PROPOSED)
        + (f", {TARGET_RATIO:g}x from K = {enough[0]} on" if enough
           else f", under {TARGET_RATIO:g}x at every K measured")
        + ", at a search quality not measured at an equal trial count (an optimistic estimate:"
        " evaluation and refit counted as packable training, the better shape's speedup); no"
        f" training at all would give {listed(bounds)}"
    )
    return reach, why


def render_section(result: PackingResult | None, number: int = 14) -> list[str]:
    if result is None or not (result.runs or result.sweeps):
        return []
    lines = [
        f"## {number}. Packed MLP trials: K same-shape models trained as one graph", "",
        "*Packed*: K MLPs of one shape (tanh, batch 64, float64) trained as one `tf.function`"
        " per epoch, weights stacked over K, one batched matmul per layer and one Adam step"
        " vectorised over K (`benchmarks/packed_training.py`); each model keeps its own learning"
        " rate, schedule, loss, input and target normalisation and seed (so its own initial"
        " weights and shuffle), and trains to what the sweep would train it to alone (within"
        " 1e-10, `tests/benchmarks/test_bench_packing.py`). *Sequential*: the sweep's own"
        " `sweep.nets.training.train` (its `make_epoch_function`), once per model, K times."
        f" Both on the 8,000 training rows of `DataSpec()`, {result.epochs} epochs per model,"
        " side by side in one process with one TensorFlow thread (as a `sweep run` worker),"
        " alternating which side goes first; medians of"
        f" {result.repeats}. Model-epochs per second *with tracing*: from the first call (data,"
        " normalisation, build, tracing) to the last epoch; *without*: the median epoch after"
        f" the first. *at {EPOCH_CAP} epochs*: the ratio with tracing projected to the default"
        " epoch cap from the measured set-up and per-epoch times. Load (1 min) during the"
        f" section: {_loads(result)} on 2 cores; read the ratios, measured side by side.", "",
    ]
    rows = []
    for operation in result.operations:
        for shape in result.shapes:
            for pack in result.packs:
                rows.append([
                    operation, shape, str(pack),
                    _rate(result.rate(operation, shape, pack, "sequential", "included")),
                    _rate(result.rate(operation, shape, pack, "packed", "included")),
                    times(result.ratio(operation, shape, pack)),
                    _rate(result.rate(operation, shape, pack, "sequential", "excluded")),
                    _rate(result.rate(operation, shape, pack, "packed", "excluded")),
                    times(result.ratio(operation, shape, pack, "excluded")),
                    times(result.ratio(operation, shape, pack, "projected")),
                ])
    lines += table(
        ["operation", "shape", "K", "sequential /s", "packed /s", "ratio", "sequential /s"
         " (no tracing)", "packed /s (no tracing)", "ratio (no tracing)",
         f"ratio at {EPOCH_CAP} epochs"],
        rows,
    )
    if result.sweeps:
        lines += ["", *_sweep_lines(result)]
    return lines


def _sweep_lines(result: PackingResult) -> list[str]:
    lines = [
        f"*Shape repetition*: MLP-only campaigns (`family = [\"mlp\"]`, the default space"
        f" otherwise, startup designs on, `stop_when_exact = false`) of {result.sweep_timeout:g}"
        f" s per operation through the Campaign API on a fresh SQLite file, campaign seeds"
        f" 0-{result.sweep_seeds - 1} on `DataSpec()`'s data. *shapes*: distinct packable"
        " shapes among the trials (layers and widths, activation, batch size, precision,"
        " epochs); *in groups*: trials whose shape another trial of the sweep shares;"
        " *training*: the objective's model time (build, training, refit, evaluation) over the"
        " trial span. *gain, groups packed*: the estimated trials per minute if every group of"
        " same-shape trials had trained as one pack: each trial's training time divided by the"
        " measured packing speedup (with tracing, at the trial's epochs, for its group's size;"
        " the better of the two shapes, interpolated in log K), everything else unchanged. It is"
        " optimistic: evaluation and refit are counted as training, pruned trials as if a pack"
        " could drop them, and the groups as if they had been proposed together. The search is"
        " the same, so the best validation error is equal by construction. *bound*: no training"
        " time at all. *K proposed*: every trial in a pack of K, as if Optuna proposed K trials"
        " per shape; the trials per minute follow from the measured speedups, but whether K"
        " trials of one shape search as well as K free ones at equal trial count is not"
        " measured here (it is the open question).", "",
    ]
    rows = []
    for sweep in result.sweeps:
        sizes = sweep.groups()
        grouped = sum(n for n in sizes.values() if n > 1)
        rows.append([
            sweep.operation, str(sweep.seed), str(len(sweep.counted)), _rate(sweep.per_minute),
            str(len(sizes)), str(max(sizes.values(), default=0)),
            f"{grouped}/{len(sweep.trials)}", percent(sweep.training_share),
            significant(sweep.best_value), times(estimate_gain(result, sweep)),
            times(bound(sweep)),
            *(times(estimate_gain(result, sweep, k)) for k in PROPOSED),
            sweep.error[:60], sweep.load_before,
        ])
    lines += table(
        ["operation", "seed", "trials", "trials/min", "shapes", "largest group", "in groups",
         "training", "best val MAE", "gain, groups packed", "bound",
         *(f"gain, K={k} proposed" for k in PROPOSED), "error", "load before"],
        rows,
    )
    reach, why = verdict(result)
    lines += [
        "",
        f"**Verdict: {'kept' if reach else 'left out'}.** Medians over the sweeps: {why}.",
    ]
    return lines


def _best(sweeps: list[ShapeSweep]) -> str:
    return significant(median(s.best_value for s in sweeps))


def target_lines(result: PackingResult | None) -> list[str]:
    if result is None or not result.sweeps:
        return []
    reach, why = verdict(result)
    k = max(result.packs)
    packed = "; ".join(
        f"{o} {shape.split()[0]} {times(result.ratio(o, shape, k))}"
        for o in result.operations for shape in result.shapes
    )
    best = "; ".join(f"{o} {_best([s for s in result.sweeps if s.operation == o])}"
                     for o in result.operations)
    return [
        f"- **Packed MLP trials, at least {TARGET_RATIO:g}x the trials per minute of an"
        f" MLP-only sweep at an equal or better best validation error:"
        f" {'kept' if reach else 'left out'}** (packed training at K = {k}, with tracing:"
        f" {packed} the model-epochs per second of the sweep's loop; {why}; median best"
        f" validation MAE {best}; section 14).",
    ]
