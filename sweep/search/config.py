"""Campaign configuration: defaults in code, a TOML file over them, CLI flags over that.

Everything is validated here, before anything is written: unknown keys, impossible ranges and
empty choice lists are refused with one line naming the value.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import ConfigError
from sweep.problem.data import DataSpec
from sweep.problem.files import read_bounded
from sweep.problem.inputs import InputRange, parse_input_ranges
from sweep.problem.operations import Operation, resolve_operations
from sweep.problem.sampling import decide_integer_valued
from sweep.problem.sources import DatasetSource, parse_datasets
from sweep.search.space import SearchSpace
from sweep.search.tracking import check_mlflow_uri, parse_tracking

if TYPE_CHECKING:
    from storage import CampaignRows

CAMPAIGN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
DEFAULT_CAMPAIGN = "arith"
SAMPLERS: tuple[str, ...] = ("auto", "tpe", "random", "cmaes", "gp", "nsga2")
PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
OBJECTIVES: tuple[str, ...] = ("mae", "median_relative_error")
SECOND_OBJECTIVES: tuple[str, ...] = ("none", "parameters")

# Settings that decide what a trial *is*: changing them under an existing campaign would mix
# incomparable trials in one study, so a re-run must match them. The rest are run settings.
IDENTITY_FIELDS: tuple[str, ...] = (
    "seed", "data", "inputs", "space", "overrides", "objective", "second_objective",
)


def study_name(campaign: str, operation: str) -> str:
    """``<campaign>.<operation>``: what `optuna studies` and optuna-dashboard list."""
    return f"{campaign}.{operation}"


def validate_campaign_name(name: str) -> str:
    # fullmatch: with match, "$" also matches before a trailing newline ("abc\n" passed).
    if not isinstance(name, str) or not CAMPAIGN_NAME.fullmatch(name):
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:57] + "..."
        raise ConfigError(
            f"invalid campaign name {shown!r}; use 1-48 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class CampaignConfig:
    """One campaign: which operations, which data, which space, which budget."""

    name: str = DEFAULT_CAMPAIGN
    operations: tuple[str, ...] = ("all",)
    expressions: Mapping[str, str] = field(default_factory=dict)
    # Per operation, per input: its range (`[inputs.OP]`); inputs without one keep `data`'s.
    inputs: Mapping[str, Mapping[str, InputRange]] = field(default_factory=dict)
    # Operations defined by a table (`[datasets]`, `--data`).
    datasets: Mapping[str, DatasetSource] = field(default_factory=dict)
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    space: SearchSpace = field(default_factory=SearchSpace)
    overrides: Mapping[str, SearchSpace] = field(default_factory=dict)
    trials: int | None = 20
    timeout: float | None = None
    sampler: str = "auto"
    pruner: str = "median"
    objective: str = "mae"
    second_objective: str = "none"
    max_trial_seconds: float = 120.0
    startup_designs: bool = True
    # A study stops once its best model is exact (hit rate 1.0 on validation, test and the
    # extrapolation band), whatever budget is left; false fills the budget. A run setting.
    stop_when_exact: bool = True
    # `[tracking] mlflow`: the MLflow tracking server's URL (`sweep.search.tracking`). A run
    # setting: the newest `sweep run` decides it for the workers that join.
    mlflow: str | None = None

    def validate(self) -> None:
        validate_campaign_name(self.name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.trials is not None and (
            isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1
        ):
            raise ConfigError(f"trials must be a positive integer, got {self.trials!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not math.isfinite(self.timeout)
            or not self.timeout > 0
        ):
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.trials is None and self.timeout is None:
            raise ConfigError("a sweep needs a budget: set trials, timeout, or both")
        _check_choice("sampler", self.sampler, SAMPLERS)
        _check_choice("pruner", self.pruner, PRUNERS)
        _check_choice("objective", self.objective, OBJECTIVES)
        _check_choice("second_objective", self.second_objective, SECOND_OBJECTIVES)
        if not isinstance(self.startup_designs, bool):
            raise ConfigError(
                f"startup_designs must be true or false, got {self.startup_designs!r}"
            )
        if not isinstance(self.stop_when_exact, bool):
            raise ConfigError(
                f"stop_when_exact must be true or false, got {self.stop_when_exact!r}"
            )
        if not (
            isinstance(self.max_trial_seconds, int | float)
            and math.isfinite(self.max_trial_seconds)
            and self.max_trial_seconds > 0
        ) or isinstance(self.max_trial_seconds, bool):
            raise ConfigError(
                f"max_trial_seconds must be a positive number, got {self.max_trial_seconds!r}"
            )
        if self.mlflow is not None:
            check_mlflow_uri(self.mlflow)
        self.data.validate()
        self.space.validate()
        operations = self.resolved_operations()
        names = {op.name for op in operations}
        for op_name in self.datasets:
            if op_name in self.inputs:
                raise ConfigError(
                    f"inputs.{op_name}: {op_name!r} is a table; its inputs and their ranges "
                    "come from its rows"
                )
        for op_name in self.overrides:
            if op_name not in names:
                raise ConfigError(
                    f"overrides.{op_name} names an operation this campaign does not sweep; "
                    f"swept: {', '.join(sorted(names))}"
                )

    @property
    def multi_objective(self) -> bool:
        return self.second_objective != "none"

    def resolved_operations(self) -> list[Operation]:
        """The swept operations, each with its inputs' ranges and its integer flag decided
        from its data (`sweep.problem.sampling.decide_integer_valued`)."""
        tables = {name: source.operation() for name, source in self.datasets.items()}
        operations = resolve_operations(self.operations, self.expressions, tables)
        known = {op.name: op for op in operations}
        for op_name, ranges in self.inputs.items():
            operation = known.get(op_name)
            if operation is None:
                raise ConfigError(
                    f"inputs.{op_name} names an operation this campaign does not sweep; "
                    f"swept: {', '.join(sorted(known))}"
                )
            for input_name in ranges:
                if input_name not in operation.inputs:
                    raise ConfigError(
                        f"inputs.{op_name}.{input_name}: {input_name!r} is not an input of "
                        f"{op_name} (its inputs: {', '.join(operation.inputs)})"
                    )
        return [self._with_ranges(op) for op in operations]

    def _with_ranges(self, operation: Operation) -> Operation:
        if operation.table:
            return operation
        given = self.inputs.get(operation.name, {})
        data = self.data
        ranges = tuple(
            given.get(name) or InputRange(name, data.low, data.high, "integer", legacy=True)
            for name in operation.inputs
        )
        resolved = replace(operation, ranges=ranges)
        return replace(
            resolved, integer_valued=decide_integer_valued(resolved, data.low, data.high)
        )

    def operation(self, name: str) -> Operation | None:
        """A swept operation by name, or a built-in over this campaign's data; else None."""
        for operation in self.resolved_operations():
            if operation.name == name:
                return operation
        builtins = resolve_operations(("all",), {})
        for operation in builtins:
            if operation.name == name:
                return self._with_ranges(operation)
        return None

    def space_for(self, operation: str) -> SearchSpace:
        return self.overrides.get(operation, self.space)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored with the campaign so a worker needs only its name."""
        return {
            "name": self.name,
            "operations": list(self.operations),
            "expressions": dict(self.expressions),
            "inputs": {
                op: {name: r.to_dict() for name, r in ranges.items()}
                for op, ranges in self.inputs.items()
            },
            "datasets": {name: source.to_dict() for name, source in self.datasets.items()},
            "seed": self.seed,
            "data": self.data.to_dict(),
            "space": self.space.to_dict(),
            "overrides": {op: space.to_dict() for op, space in self.overrides.items()},
            "trials": self.trials,
            "timeout": self.timeout,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "objective": self.objective,
            "second_objective": self.second_objective,
            "max_trial_seconds": self.max_trial_seconds,
            "startup_designs": self.startup_designs,
            "stop_when_exact": self.stop_when_exact,
            "tracking": {} if self.mlflow is None else {"mlflow": self.mlflow},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CampaignConfig:
        """Inverse of `to_dict` (a stored campaign, read by every worker and by pull).

        Raises:
            ConfigError: an invalid value, or a stored form that was damaged or written by an
                incompatible version (a missing key, a list where a table belongs, ...).
        """
        try:
            return cls._from_dict(raw)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            name = raw.get("name") if isinstance(raw, Mapping) else None
            what = f"no {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:200]
            raise ConfigError(
                f"stored campaign {name!r} cannot be read ({what}); it was damaged or written "
                "by an incompatible version of sweep"
            ) from None

    @classmethod
    def _from_dict(cls, raw: Mapping[str, Any]) -> CampaignConfig:
        base = SearchSpace.from_dict(raw.get("space", {}))
        config = cls(
            name=raw["name"],
            operations=tuple(raw["operations"]),
            expressions=dict(raw.get("expressions", {})),
            inputs=parse_input_ranges(raw.get("inputs", {}), "inputs"),
            datasets={
                name: DatasetSource.from_dict(name, value)
                for name, value in raw.get("datasets", {}).items()
            },
            seed=raw["seed"],
            data=DataSpec.from_dict(raw["data"]),
            space=base,
            overrides={
                op: SearchSpace.from_dict(value, base)
                for op, value in raw.get("overrides", {}).items()
            },
            trials=raw.get("trials"),
            timeout=raw.get("timeout"),
            sampler=raw.get("sampler", "auto"),
            pruner=raw.get("pruner", "median"),
            objective=raw.get("objective", "mae"),
            second_objective=raw.get("second_objective", "none"),
            max_trial_seconds=raw.get("max_trial_seconds", 120.0),
            startup_designs=raw.get("startup_designs", True),
            # Stored before the setting existed: the default, as for a new campaign.
            stop_when_exact=raw.get("stop_when_exact", True),
            # Stored before tracking existed: none.
            mlflow=parse_tracking(raw.get("tracking", {})),
        )
        config.validate()
        return config

    def identity_conflicts(self, stored: CampaignConfig) -> list[str]:
        """Names of the identity settings where `self` differs from the stored campaign."""
        mine, theirs = self.to_dict(), stored.to_dict()
        conflicts = [key for key in IDENTITY_FIELDS if mine[key] != theirs[key]]
        for name, text in self.expressions.items():
            if name in stored.expressions and stored.expressions[name] != text:
                conflicts.append(f"expressions.{name}")
            elif name in stored.datasets:  # a table there, a formula here
                conflicts.append(f"expressions.{name} (a table in the stored campaign)")
        for name, source in self.datasets.items():
            recorded = stored.datasets.get(name)
            if recorded is not None and recorded.identity() != source.identity():
                conflicts.append(f"datasets.{name}")
            elif name in stored.expressions:
                conflicts.append(f"datasets.{name} (an expression in the stored campaign)")
        return conflicts


_FORMULA_KEYS = ("max_terms", "functions")


def _without_formula_family(space: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in space.items() if key not in _FORMULA_KEYS}
    family = out.get("family")
    if isinstance(family, list):
        out["family"] = [name for name in family if name != "formula"]
    return out


def keeping_stored_space(config: CampaignConfig, stored: CampaignConfig) -> CampaignConfig:
    """A campaign created before the formula family, resumed with today's default space: its
    stored space (and overrides) are kept, so its trials stay comparable and the run is not
    refused as a different campaign. Any other difference is left to `identity_conflicts`."""
    if "formula" in stored.space.family.values():
        return config
    mine = {op: s.to_dict() for op, s in config.overrides.items()} | {"": config.space.to_dict()}
    theirs = {op: s.to_dict() for op, s in stored.overrides.items()} | {"": stored.space.to_dict()}
    if mine.keys() != theirs.keys() or mine == theirs:
        return config
    if all(_without_formula_family(mine[k]) == _without_formula_family(theirs[k]) for k in mine):
        return replace(config, space=stored.space, overrides=stored.overrides)
    return config


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} {value!r} is not allowed; choose from {', '.join(allowed)}")


_CAMPAIGN_KEYS = {
    "name", "operations", "seed", "trials", "timeout", "sampler", "pruner", "objective",
    "second_objective", "max_trial_seconds", "startup_designs", "stop_when_exact",
}
_TOP_LEVEL_KEYS = {
    "campaign", "expressions", "inputs", "datasets", "data", "space", "overrides", "tracking",
}


# A campaign file is a few dozen lines; a megabyte is a mistake (or an attack), not a config.
MAX_CONFIG_BYTES = 1 << 20


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a campaign file; any read or syntax problem is one ConfigError line.

    Only a regular file of at most `MAX_CONFIG_BYTES` is read: a FIFO would block, and
    ``/dev/zero`` or a huge file would fill the memory.
    """
    file = Path(path)
    text = str(file)
    shown = repr(text if len(text) <= 200 else text[:197] + "...")
    data = read_bounded(file, MAX_CONFIG_BYTES, f"config file {shown}", "a campaign file")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {shown} is not UTF-8 text: {e.reason} at byte {e.start}"
        ) from None
    try:
        return tomllib.loads(decoded)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {shown} is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"config file {shown} nests arrays or tables too deeply") from None


def config_from_toml(
    raw: Mapping[str, Any],
    base: CampaignConfig | None = None,
    base_dir: Path | None = None,
) -> CampaignConfig:
    """Overlay a parsed TOML document on `base` (the defaults); a table's file is read from
    `base_dir` (the campaign file's folder) when its path is relative."""
    config = base or CampaignConfig()
    _reject_unknown("", raw, _TOP_LEVEL_KEYS)
    campaign = _table(raw, "campaign")
    _reject_unknown("campaign.", campaign, _CAMPAIGN_KEYS)
    updates: dict[str, Any] = dict(campaign)
    if "operations" in updates:
        ops = updates["operations"]
        if isinstance(ops, str):
            ops = [part.strip() for part in ops.split(",") if part.strip()]
        if not isinstance(ops, list) or not ops or not all(isinstance(o, str) for o in ops):
            raise ConfigError(
                "campaign.operations must be a non-empty list of names, "
                f"got {campaign['operations']!r}"
            )
        updates["operations"] = tuple(ops)
    if "timeout" in campaign and "trials" not in campaign:
        updates["trials"] = None  # a timeout alone is a time budget, with no trial cap
    expressions = _table(raw, "expressions")
    for name, text in expressions.items():
        if not isinstance(text, str):
            raise ConfigError(f"expressions.{name} must be a string, got {text!r}")
    if expressions:
        updates["expressions"] = {**config.expressions, **expressions}
    if "inputs" in raw:
        updates["inputs"] = {**config.inputs, **parse_input_ranges(raw["inputs"], "inputs")}
    if "datasets" in raw:
        updates["datasets"] = {**config.datasets, **parse_datasets(raw["datasets"], base_dir)}
    if "data" in raw:
        data_table = _table(raw, "data")
        allowed = {f.name for f in fields(DataSpec)} - {"seed"}
        _reject_unknown("data.", data_table, allowed)
        updates["data"] = DataSpec.from_dict({**config.data.to_dict(), **data_table})
    space = SearchSpace.from_dict(_table(raw, "space"), config.space)
    updates["space"] = space
    overrides_table = _table(raw, "overrides")
    overrides: dict[str, SearchSpace] = dict(config.overrides)
    for op_name, table in overrides_table.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"overrides.{op_name} must be a table of space keys")
        overrides[op_name] = SearchSpace.from_dict(table, space)
    updates["overrides"] = overrides
    if "tracking" in raw:
        updates["mlflow"] = parse_tracking(_table(raw, "tracking"))
    try:
        config = replace(config, **updates)
    except TypeError as e:  # pragma: no cover - keys were checked above
        raise ConfigError(str(e)) from None
    return with_seed(config, config.seed)


def with_seed(config: CampaignConfig, seed: int) -> CampaignConfig:
    """The campaign seed also seeds the data, so one number reproduces everything."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return replace(config, seed=seed, data=replace(config.data, seed=seed))


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a TOML table, got {value!r}")
    return value


def _reject_unknown(prefix: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}; allowed: {', '.join(sorted(allowed))}"
            )


def load_campaign_config(campaigns: CampaignRows, name: str) -> CampaignConfig | None:
    """The campaign stored under `name`, or None if there is none."""
    stored = campaigns.load(name)
    return CampaignConfig.from_dict(stored) if stored is not None else None
