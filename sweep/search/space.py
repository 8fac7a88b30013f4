"""The search space: the only module that calls ``trial.suggest_*``.

A `SearchSpace` holds one `Dimension` per hyperparameter. Each dimension is fixed (one value,
not suggested), categorical (a list of choices) or a numeric range. `suggest` turns a trial into
a plain `ModelSpec`, which `sweep.nets.training` builds without knowing Optuna exists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from sweep.errors import ConfigError
from sweep.nets import (
    ACTIVATIONS,
    FAMILIES,
    LOSSES,
    LR_SCHEDULES,
    MAX_DEGREE,
    MAX_FORMULA_TERMS,
    PRECISIONS,
    SCHEMES,
    ModelSpec,
    count_parameters,
    monomial_exponents,
)

if TYPE_CHECKING:
    import optuna

# A bound on model size keeps a widened space from building a model that exhausts the machine.
DEFAULT_MAX_PARAMETERS = 250_000
MAX_LAYERS = 16


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter: fixed, categorical (`choices`) or a range (`low`..`high`)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_fixed(self) -> bool:
        if self.choices is not None:
            return len(self.choices) == 1
        return self.low == self.high

    def values(self) -> tuple[Any, ...]:
        """Every choice, or the two ends of a range."""
        if self.choices is not None:
            return self.choices
        return (self.low, self.high)

    def suggest(self, trial: optuna.Trial, name: str | None = None) -> Any:
        key = name or self.name
        if self.choices is not None:
            if len(self.choices) == 1:
                return self.choices[0]
            return trial.suggest_categorical(key, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.low == self.high:
            return int(self.low) if self.integer else float(self.low)
        if self.integer:
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(key, self.low, self.high, log=self.log)

    def to_toml_value(self) -> Any:
        if self.choices is not None:
            return list(self.choices)
        if self.low == self.high:
            return self.low
        return {"low": self.low, "high": self.high, "log": self.log}


def _choice_dimension(
    name: str, raw: Any, allowed: Sequence[Any] | None, kind: type
) -> Dimension:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise ConfigError(f"space.{name} is an empty list; give at least one value")
    checked: list[Any] = []
    for value in values:
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"space.{name} value {value!r} is not an integer")
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"space.{name} value {value!r} is not a string")
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"space.{name} value {value!r} is not true or false")
        if allowed is not None and value not in allowed:
            choices = ", ".join(str(a) for a in allowed)
            raise ConfigError(f"space.{name} value {value!r} is not allowed; choose from {choices}")
        if kind is int and value <= 0:
            raise ConfigError(f"space.{name} value {value} must be positive")
        if value not in checked:
            checked.append(value)
    return Dimension(name=name, choices=tuple(checked))


def _range_dimension(
    name: str, raw: Any, *, integer: bool, minimum: float, maximum: float
) -> Dimension:
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"low", "high", "log"}
        if unknown:
            raise ConfigError(
                f"space.{name} has unknown key {sorted(unknown)[0]!r}; allowed: low, high, log"
            )
        if "low" not in raw or "high" not in raw:
            raise ConfigError(f"space.{name} needs both low and high, got {dict(raw)!r}")
        low, high, log = raw["low"], raw["high"], raw.get("log", False)
    else:
        low = high = raw
        log = False
    for label, value in (("low", low), ("high", high)):
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"space.{name}.{label} must be {kind}, got {value!r}")
        if not minimum <= value <= maximum:
            raise ConfigError(
                f"space.{name}.{label} = {value} is out of bounds; allowed {minimum}..{maximum}"
            )
    if low > high:
        raise ConfigError(f"space.{name}: low <= high must hold, but got low={low}, high={high}")
    if not isinstance(log, bool):
        raise ConfigError(f"space.{name}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"space.{name}: a log range needs low > 0, got low={low}")
    return Dimension(name=name, low=low, high=high, log=log, integer=integer)


@dataclass(frozen=True)
class SearchSpace:
    """Per-operation search space; defaults are the project's recommended space."""

    layers: Dimension = field(
        default_factory=lambda: Dimension("layers", low=0, high=3, integer=True)
    )
    width: Dimension = field(
        default_factory=lambda: Dimension("width", low=2, high=64, log=True, integer=True)
    )
    activation: Dimension = field(default_factory=lambda: Dimension("activation", ACTIVATIONS))
    input_normalization: Dimension = field(
        default_factory=lambda: Dimension("input_normalization", SCHEMES)
    )
    target_normalization: Dimension = field(
        default_factory=lambda: Dimension("target_normalization", SCHEMES)
    )
    learning_rate: Dimension = field(
        default_factory=lambda: Dimension("learning_rate", low=1e-4, high=3e-2, log=True)
    )
    batch_size: Dimension = field(
        default_factory=lambda: Dimension("batch_size", (32, 64, 128))
    )
    loss: Dimension = field(default_factory=lambda: Dimension("loss", LOSSES))
    epochs: Dimension = field(
        default_factory=lambda: Dimension("epochs", low=30, high=30, integer=True)
    )
    lr_schedule: Dimension = field(
        default_factory=lambda: Dimension("lr_schedule", LR_SCHEDULES)
    )
    refit_output: Dimension = field(
        default_factory=lambda: Dimension("refit_output", (True, False))
    )
    # float64 by default: exactness at products near 1e6 needs relative errors below 5e-7,
    # float32's own rounding; on these tiny networks it costs no measurable time here.
    precision: Dimension = field(default_factory=lambda: Dimension("precision", ("float64",)))
    # The architecture family, and the power family's own dimensions (sweep.nets.spec): which
    # product units (degree, negative and half exponents) and whether to offer the solved
    # coefficients rounded. Chosen by validation error like everything else.
    family: Dimension = field(default_factory=lambda: Dimension("family", FAMILIES))
    degree: Dimension = field(
        default_factory=lambda: Dimension("degree", low=1, high=4, integer=True)
    )
    negative_powers: Dimension = field(
        default_factory=lambda: Dimension("negative_powers", (True, False))
    )
    half_powers: Dimension = field(
        default_factory=lambda: Dimension("half_powers", (False, True))
    )
    snap_output: Dimension = field(
        default_factory=lambda: Dimension("snap_output", (True, False))
    )
    # The formula family's own: how many terms a found sum may keep, and whether its terms may
    # hold a unary function (its candidate products are bounded by `degree`).
    max_terms: Dimension = field(
        default_factory=lambda: Dimension("max_terms", low=2, high=8, integer=True)
    )
    functions: Dimension = field(
        default_factory=lambda: Dimension("functions", (True, False))
    )
    max_parameters: int = DEFAULT_MAX_PARAMETERS

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: SearchSpace | None = None) -> SearchSpace:
        """Overlay TOML values on `base` (the defaults); unknown keys are refused."""
        space = base or cls()
        updates: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(
                    f"unknown space key {key!r}; allowed: {', '.join(sorted(known))}"
                )
            updates[key] = _parse_dimension(key, value)
        space = replace(space, **updates)
        space.validate()
        return space

    def validate(self) -> None:
        """Refuse a space whose largest model would exceed `max_parameters`."""
        max_layers = int(self.layers.values()[-1] if self.layers.choices is None
                         else max(self.layers.values()))
        max_width = int(self.width.values()[-1] if self.width.choices is None
                        else max(self.width.values()))
        if "mlp" in self.family.values():
            largest = count_parameters(2, [max_width] * max_layers)
            if largest > self.max_parameters:
                raise ConfigError(
                    f"the largest model in the space ({max_layers} layers of width {max_width}) "
                    f"has {largest} parameters; the bound is space.max_parameters = "
                    f"{self.max_parameters}"
                )
        if "power" in self.family.values():
            degree = int(self.degree.values()[-1] if self.degree.choices is None
                         else max(self.degree.values()))
            units = len(monomial_exponents(
                2, degree, True in self.negative_powers.values(), True in self.half_powers.values()
            ))
            if units + 1 > self.max_parameters:
                raise ConfigError(
                    f"the largest power model in the space (degree {degree}) has {units + 1} "
                    f"parameters; the bound is space.max_parameters = {self.max_parameters}"
                )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_toml_value() if isinstance(value, Dimension) else value
        return out

    def suggest(self, trial: optuna.Trial) -> ModelSpec:
        """Sample one model; layer widths are conditional on the layer count, and the power
        family's dimensions (and the MLP's training ones) on the family."""
        family = str(self.family.suggest(trial))
        if family == "formula":
            return formula_spec(
                degree=int(self.degree.suggest(trial)),
                max_terms=int(self.max_terms.suggest(trial)),
                functions=bool(self.functions.suggest(trial)),
            )
        if family == "power":
            return power_spec(
                degree=int(self.degree.suggest(trial)),
                negative_powers=bool(self.negative_powers.suggest(trial)),
                half_powers=bool(self.half_powers.suggest(trial)),
                snap_output=bool(self.snap_output.suggest(trial)),
                target_normalization=str(self.target_normalization.suggest(trial)),
            )
        n_layers = int(self.layers.suggest(trial))
        widths = tuple(int(self.width.suggest(trial, f"width_{i}")) for i in range(n_layers))
        # A linear model has no hidden activation: do not let the sampler waste a dimension.
        activation = str(self.activation.suggest(trial)) if n_layers else "linear"
        return ModelSpec(
            hidden_layers=widths,
            activation=activation,
            input_normalization=str(self.input_normalization.suggest(trial)),
            target_normalization=str(self.target_normalization.suggest(trial)),
            learning_rate=float(self.learning_rate.suggest(trial)),
            batch_size=int(self.batch_size.suggest(trial)),
            loss=str(self.loss.suggest(trial)),
            epochs=int(self.epochs.suggest(trial)),
            lr_schedule=str(self.lr_schedule.suggest(trial)),
            refit_output=bool(self.refit_output.suggest(trial)),
            precision=str(self.precision.suggest(trial)),
        )


def power_spec(
    *,
    degree: int,
    negative_powers: bool,
    half_powers: bool,
    snap_output: bool,
    target_normalization: str,
) -> ModelSpec:
    """A power-family spec. It has no gradient training: the MLP's training fields hold
    neutral values that nothing reads (sweep.nets.training solves the output instead)."""
    return ModelSpec(
        hidden_layers=(),
        activation="linear",
        input_normalization="none",
        target_normalization=target_normalization,
        learning_rate=0.0,
        batch_size=1,
        loss="mse",
        epochs=0,
        lr_schedule="constant",
        refit_output=True,
        precision="float64",
        family="power",
        degree=degree,
        negative_powers=negative_powers,
        half_powers=half_powers,
        snap_output=snap_output,
    )


def formula_spec(*, degree: int, max_terms: int, functions: bool) -> ModelSpec:
    """A formula-family spec: like the power family's, its training fields are neutral."""
    return replace(
        power_spec(
            degree=degree, negative_powers=True, half_powers=False, snap_output=True,
            target_normalization="none",
        ),
        family="formula",
        max_terms=max_terms,
        functions=functions,
    )


def spec_from_params(params: Mapping[str, Any], space: SearchSpace) -> ModelSpec:
    """Rebuild a trial's `ModelSpec` from its stored params (fixed dimensions from `space`)."""

    def pick(dim: Dimension, key: str | None = None) -> Any:
        name = key or dim.name
        if name in params:
            return params[name]
        if not dim.is_fixed:
            raise ConfigError(f"trial params lack {name!r} and the space does not fix it")
        return dim.values()[0]

    # Trials from before the power family have no family parameter: they are MLPs.
    family = str(params.get("family", space.family.values()[0] if space.family.is_fixed
                            else "mlp"))
    if family == "formula":
        return formula_spec(
            degree=int(pick(space.degree)),
            max_terms=int(pick(space.max_terms)),
            functions=bool(pick(space.functions)),
        )
    if family == "power":
        return power_spec(
            degree=int(pick(space.degree)),
            negative_powers=bool(pick(space.negative_powers)),
            half_powers=bool(pick(space.half_powers)),
            snap_output=bool(pick(space.snap_output)),
            target_normalization=str(pick(space.target_normalization)),
        )
    n_layers = int(pick(space.layers))
    widths = tuple(int(pick(space.width, f"width_{i}")) for i in range(n_layers))
    return ModelSpec(
        hidden_layers=widths,
        activation=str(pick(space.activation)) if n_layers else "linear",
        input_normalization=str(pick(space.input_normalization)),
        target_normalization=str(pick(space.target_normalization)),
        learning_rate=float(pick(space.learning_rate)),
        batch_size=int(pick(space.batch_size)),
        loss=str(pick(space.loss)),
        epochs=int(pick(space.epochs)),
        lr_schedule=str(pick(space.lr_schedule)),
        refit_output=bool(pick(space.refit_output)),
        precision=str(pick(space.precision)),
    )


def _parse_dimension(key: str, value: Any) -> Any:
    if key == "max_parameters":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"space.max_parameters must be a positive integer, got {value!r}")
        return value
    if key == "layers":
        return _range_dimension(key, value, integer=True, minimum=0, maximum=MAX_LAYERS)
    if key == "width":
        return _range_dimension(key, value, integer=True, minimum=1, maximum=4096)
    if key == "epochs":
        return _range_dimension(key, value, integer=True, minimum=1, maximum=10_000)
    if key == "degree":
        return _range_dimension(key, value, integer=True, minimum=1, maximum=MAX_DEGREE)
    if key == "max_terms":
        return _range_dimension(key, value, integer=True, minimum=1, maximum=MAX_FORMULA_TERMS)
    if key == "learning_rate":
        return _range_dimension(key, value, integer=False, minimum=1e-8, maximum=10.0)
    if key == "batch_size":
        return _choice_dimension(key, value, None, int)
    if key in ("refit_output", "negative_powers", "half_powers", "snap_output", "functions"):
        return _choice_dimension(key, value, (True, False), bool)
    allowed = {
        "activation": ACTIVATIONS,
        "input_normalization": SCHEMES,
        "target_normalization": SCHEMES,
        "loss": LOSSES,
        "lr_schedule": LR_SCHEDULES,
        "precision": PRECISIONS,
        "family": FAMILIES,
    }[key]
    return _choice_dimension(key, value, allowed, str)
