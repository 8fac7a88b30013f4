"""The campaign a `run` or `worker` command describes: its file, then its flags.

Flags override the file, which overrides the defaults; the whole configuration is validated
here, before anything is written, so a bad value stops the command with one line. The budget
is the one given: `--timeout` without `--trials` (and no `trials` in the file) has no trial
cap, the default of 20 trials holds only when neither gives a budget.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep import settings
from sweep.errors import ConfigError

if TYPE_CHECKING:
    from sweep.problem.sources import DatasetSource
    from sweep.search.config import CampaignConfig

__all__ = ["build_config"]


def build_config(args: argparse.Namespace, campaign: str) -> CampaignConfig:
    """The validated campaign configuration from `--config` and the flags of `run`.

    Raises:
        ConfigError: a flag or the file names no operation or an invalid value.
    """
    from dataclasses import replace

    from sweep.problem.operations import parse_expr_flag
    from sweep.search.config import CampaignConfig, config_from_toml, load_toml, with_seed

    config = CampaignConfig()
    raw = load_toml(args.config) if args.config else {}
    if args.config:
        config = config_from_toml(raw, config, base_dir=Path(args.config).parent)
    in_file = raw.get("campaign", {})  # a table: config_from_toml refused anything else
    updates: dict[str, Any] = {}
    if args.campaign or settings.current().campaign:
        updates["name"] = campaign  # flag > environment > config file > default
    if args.ops:
        ops = tuple(part.strip() for part in args.ops.split(",") if part.strip())
        if not ops:
            raise ConfigError(f"--ops {args.ops!r} names no operation")
        updates["operations"] = ops
    if args.expr:
        expressions = dict(config.expressions)
        for text in args.expr:
            name, expression = parse_expr_flag(text)
            expressions[name] = expression
        updates["expressions"] = expressions
        if not args.ops and "operations" not in in_file:
            # `--expr` alone sweeps just the expressions, not all six built-ins as well.
            updates["operations"] = tuple(expressions)
    tables = _tables_from_flags(getattr(args, "data", []), getattr(args, "target", []))
    if tables:
        updates["datasets"] = {**config.datasets, **tables}
        if not args.ops and "operations" not in in_file:
            # Like --expr: `--data` sweeps what the flags define, not the six built-ins too.
            updates["operations"] = tuple(
                dict.fromkeys([*updates.get("operations", ()), *tables])
            )
    if args.trials is not None:
        updates["trials"] = args.trials
    if args.timeout is not None:
        updates["timeout"] = args.timeout
        if args.trials is None and "trials" not in in_file:
            updates["trials"] = None  # `--timeout` alone: a time budget, no trial cap
    # `sweep worker --config` has no such flags: its file (or the default) decides.
    stop_when_exact = getattr(args, "stop_when_exact", None)
    if stop_when_exact is not None:
        updates["stop_when_exact"] = stop_when_exact
    if args.sampler:
        updates["sampler"] = args.sampler
    if args.pruner:
        updates["pruner"] = args.pruner
    config = replace(config, **updates)
    if args.seed is not None:
        config = with_seed(config, args.seed)
    config.validate()
    return config


def _tables_from_flags(data: list[str], targets: list[str]) -> dict[str, DatasetSource]:
    """``--data NAME=FILE`` with ``--target COLUMN``: one target for all, or one per table."""
    from sweep.problem.sources import DatasetSource, parse_data_flag

    named = [parse_data_flag(text) for text in data]
    if not data:
        if targets:
            raise ConfigError("--target names the column a --data table predicts; give --data")
        return {}
    if not targets:
        raise ConfigError(
            "--data needs --target COLUMN, the column to predict (every other column is an "
            "input)"
        )
    if len(targets) not in (1, len(data)):
        raise ConfigError(
            f"{len(targets)} --target flags for {len(data)} --data flags; give one for all, "
            "or one per --data in order"
        )
    out: dict[str, DatasetSource] = {}
    for index, (name, file) in enumerate(named):
        target = targets[0] if len(targets) == 1 else targets[index]
        out[name] = DatasetSource.read(name, file, target)
    return out
