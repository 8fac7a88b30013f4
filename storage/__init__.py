"""Storage for the sweep service: URLs, engines, our tables and the model registry.

The ground floor: plain SQLAlchemy, never imports ``sweep`` (nor Keras, TensorFlow or Optuna).
Optuna's tables live in the same database; ours are prefixed ``sweep_``.
"""

from __future__ import annotations

from storage.engine import check_reachable, create_engine, enable_sqlite_wal, engine_options
from storage.errors import (
    ChecksumMismatch,
    IncompatibleSchema,
    InvalidRegistryValue,
    InvalidStorageURL,
    ModelNotFound,
    StorageError,
    StorageInternalError,
    StorageUnavailable,
)
from storage.models import SCHEMA_VERSION, ensure_schema
from storage.registry import ModelCandidate, ModelEntry, ModelRegistry
from storage.urls import (
    DEFAULT_STORAGE_URL,
    dialect_of,
    mask_url,
    normalize_storage_url,
    resolve_storage_url,
)

__all__ = [
    "DEFAULT_STORAGE_URL",
    "SCHEMA_VERSION",
    "ChecksumMismatch",
    "IncompatibleSchema",
    "InvalidRegistryValue",
    "InvalidStorageURL",
    "ModelCandidate",
    "ModelEntry",
    "ModelNotFound",
    "ModelRegistry",
    "StorageError",
    "StorageInternalError",
    "StorageUnavailable",
    "check_reachable",
    "create_engine",
    "dialect_of",
    "enable_sqlite_wal",
    "engine_options",
    "ensure_schema",
    "mask_url",
    "normalize_storage_url",
    "resolve_storage_url",
]
