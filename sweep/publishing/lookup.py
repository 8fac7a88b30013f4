"""Finding an operation and its stored model in a campaign: the first step of every read.

Shared by listing, loading, predicting, pulling and serving, so each refuses a bad name, an
unknown operation or a model from an incompatible Keras the same way.
"""

from __future__ import annotations

from storage import CampaignRows, Database, ModelEntry
from sweep.errors import ConfigError
from sweep.problem.operations import (
    BUILTIN_OPERATIONS,
    Operation,
    is_operation_name,
)
from sweep.search.config import CampaignConfig, validate_campaign_name

__all__ = ["check_operation_name", "fetch_model", "resolve_operation"]


def check_operation_name(name: str) -> None:
    """Refuse a name no operation can have (``../x``, control characters) before any storage
    is opened, so a mistyped command never creates a database file."""
    if not is_operation_name(name):
        raise ConfigError(
            f"unknown operation {name!r}; operation names are a lowercase letter, then "
            f"lowercase letters, digits or _ (built-ins: {', '.join(BUILTIN_OPERATIONS)})"
        )


def resolve_operation(campaigns: CampaignRows, campaign: str, name: str) -> Operation:
    """The operation as the stored campaign defines it (its inputs, their ranges, its integer
    flag decided from its data), a built-in when there is no such campaign; else a clear
    error."""
    validate_campaign_name(campaign)
    stored = campaigns.load(campaign)
    if stored is None:
        if name in BUILTIN_OPERATIONS:
            return BUILTIN_OPERATIONS[name]
        known = sorted(BUILTIN_OPERATIONS)
    else:
        config = CampaignConfig.from_dict(stored)
        operation = config.operation(name)
        if operation is not None:
            return operation
        known = sorted(
            {*BUILTIN_OPERATIONS, *(op.name for op in config.resolved_operations())}
        )
    raise ConfigError(
        f"unknown operation {name!r} in campaign {campaign!r}; known: {', '.join(known)}"
    )


def fetch_model(
    database: Database, campaign: str, operation: str, version: int | None = None
) -> tuple[ModelEntry, bytes]:
    """The registry entry and verified `.keras` bytes (checksum checked by the registry)."""
    check_operation_name(operation)
    resolve_operation(database.campaigns, campaign, operation)
    entry, data = database.registry.fetch(campaign, operation, version)
    from sweep.nets.archive import check_keras_version  # no Keras: refusals come at once

    check_keras_version(entry.keras_version, label=f"{entry.operation} version {entry.version}")
    return entry, data
