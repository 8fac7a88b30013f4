"""Startup designs: the same few models tried first in every study, whatever the operation.

The designs are known exact solutions in some normalisation domain; which one fits which
operation is left to the objective (the validation error), never read from the operation.
"""

from __future__ import annotations

from typing import Any

from sweep.search.space import Dimension, SearchSpace

__all__ = ["startup_designs"]


# Linear models under each normalisation pair, tried first in every study (the same list for
# every operation: the objective, not the code, decides which pair fits which operation).
# A linear model with a closing least-squares fit is exact for add and subtract without
# normalisation, and for multiply, divide, square and sqrt in the log_abs domain.
_DESIGN_PAIRS: tuple[tuple[str, str], ...] = (
    ("none", "none"),
    ("log_abs", "log_abs"),
    ("standard", "standard"),
    ("log", "log"),
)


# Power-family designs (product units of a fixed degree, output solved by least squares):
# degree 4 with negative exponents holds every polynomial of total degree <= 4 and every sum of
# integer-power products of that degree (a/b + b/a, a + 1/b); degree 2 with halves holds sqrt.
_POWER_DESIGNS: tuple[tuple[int, bool, bool], ...] = (
    (4, True, False),
    (2, True, True),
)


# The formula-family design: every structure it knows (sums, powers and ratios of products,
# a unary function) with its widest defaults. Last, so the designs before it keep their trial
# numbers (and what was exact at trial k still is).
_FORMULA_DESIGN: tuple[tuple[str, Any], ...] = (
    ("degree", 3), ("max_terms", 6), ("functions", True),
)


def startup_designs(space: SearchSpace) -> list[dict[str, Any]]:
    """The startup designs that fit in `space`, as Optuna params (fixed dimensions left out)."""
    designs = _linear_designs(space) if "mlp" in space.family.values() else []
    if "mlp" in space.family.values() and designs and not space.family.is_fixed:
        designs = [{"family": "mlp", **design} for design in designs]
    return designs + _power_designs(space) + _formula_designs(space)


def _formula_designs(space: SearchSpace) -> list[dict[str, Any]]:
    if "formula" not in space.family.values():
        return []
    params: dict[str, Any] = {} if space.family.is_fixed else {"family": "formula"}
    for dim_name, value in _FORMULA_DESIGN:
        dim: Dimension = getattr(space, dim_name)
        if dim.choices is None:
            low, high = dim.values()
            if not low <= value <= high:
                value = high if value > high else low
        elif value not in dim.choices:
            value = dim.choices[0]
        if not dim.is_fixed:
            params[dim_name] = value
    return [params]


def _power_designs(space: SearchSpace) -> list[dict[str, Any]]:
    if "power" not in space.family.values():
        return []
    base: dict[str, Any] = {}
    if not space.family.is_fixed:
        base["family"] = "power"
    for dim_name, value in (("snap_output", True), ("target_normalization", "none")):
        dim: Dimension = getattr(space, dim_name)
        if dim.is_fixed:
            continue
        if value not in dim.values():
            return []
        base[dim_name] = value
    designs = []
    for degree, negative, half in _POWER_DESIGNS:
        params = dict(base)
        wanted: tuple[tuple[str, Any], ...] = (
            ("degree", degree), ("negative_powers", negative), ("half_powers", half),
        )
        fits = True
        for dim_name, value in wanted:
            dim = getattr(space, dim_name)
            if dim.choices is None:
                low, high = dim.values()
                fits = fits and low <= value <= high
            else:
                fits = fits and value in dim.choices
            if not dim.is_fixed:
                params[dim_name] = value
        if fits:
            designs.append(params)
    return designs


def _linear_designs(space: SearchSpace) -> list[dict[str, Any]]:
    if 0 not in _layer_values(space):
        return []
    preferred = {
        "loss": "mse",
        "lr_schedule": "cosine",
        "refit_output": True,
    }
    base: dict[str, Any] = {}
    if not space.layers.is_fixed:
        base["layers"] = 0
    for dim_name, value in preferred.items():
        dim: Dimension = getattr(space, dim_name)
        if dim.is_fixed:
            continue
        if value not in dim.values():
            return []  # the user narrowed the space away from these designs
        base[dim_name] = value
    if not space.learning_rate.is_fixed:
        low, high = space.learning_rate.values()
        base["learning_rate"] = min(max(0.01, float(low)), float(high))
    if not space.batch_size.is_fixed:
        base["batch_size"] = max(space.batch_size.values())
    if not space.precision.is_fixed:
        base["precision"] = "float64" if "float64" in space.precision.values() else None
    designs = []
    for input_scheme, target_scheme in _DESIGN_PAIRS:
        inputs, targets = space.input_normalization, space.target_normalization
        if input_scheme not in inputs.values() or target_scheme not in targets.values():
            continue
        params = dict(base)
        if not inputs.is_fixed:
            params["input_normalization"] = input_scheme
        if not targets.is_fixed:
            params["target_normalization"] = target_scheme
        designs.append({k: v for k, v in params.items() if v is not None})
    return designs


def _layer_values(space: SearchSpace) -> range | tuple[Any, ...]:
    if space.layers.choices is not None:
        return space.layers.choices
    low, high = space.layers.values()
    return range(int(low), int(high) + 1)
