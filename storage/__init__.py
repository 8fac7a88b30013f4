"""Storage for the sweep service: URLs, engines, our tables and the model registry.

The ground floor: plain SQLAlchemy, never imports ``sweep`` (nor Keras, TensorFlow or Optuna).
Optuna's tables live in the same database; ours are prefixed ``sweep_``.
"""

from __future__ import annotations

from storage.bounds import NetworkBounds
from storage.campaigns import CampaignMerge, CampaignRows
from storage.database import Database
from storage.datasets import MAX_DATASET_BYTES, DatasetRows
from storage.engine import check_reachable, create_engine, enable_sqlite_wal, engine_options
from storage.errors import (
    CampaignConflict,
    ChecksumMismatch,
    DamagedRegistry,
    ForeignDatabase,
    IncompatibleSchema,
    InvalidRegistryValue,
    InvalidStorageURL,
    ModelNotFound,
    PromotionRefused,
    StorageError,
    StorageInternalError,
    StorageUnavailable,
)
from storage.models import SCHEMA_VERSION, check_not_foreign, ensure_schema
from storage.registry import ModelRegistry, PromotionGuard
from storage.rows import ModelCandidate, ModelEntry
from storage.urls import (
    DEFAULT_STORAGE_URL,
    StorageURL,
    dialect_of,
    mask_url,
    normalize_storage_url,
    parse_storage_url,
    resolve_storage_url,
)

__all__ = [
    "DEFAULT_STORAGE_URL",
    "MAX_DATASET_BYTES",
    "SCHEMA_VERSION",
    "CampaignConflict",
    "CampaignMerge",
    "CampaignRows",
    "ChecksumMismatch",
    "DamagedRegistry",
    "Database",
    "DatasetRows",
    "ForeignDatabase",
    "IncompatibleSchema",
    "InvalidRegistryValue",
    "InvalidStorageURL",
    "ModelCandidate",
    "ModelEntry",
    "ModelNotFound",
    "ModelRegistry",
    "NetworkBounds",
    "PromotionGuard",
    "PromotionRefused",
    "StorageError",
    "StorageInternalError",
    "StorageURL",
    "StorageUnavailable",
    "check_not_foreign",
    "check_reachable",
    "create_engine",
    "dialect_of",
    "enable_sqlite_wal",
    "engine_options",
    "ensure_schema",
    "mask_url",
    "normalize_storage_url",
    "parse_storage_url",
    "resolve_storage_url",
]
