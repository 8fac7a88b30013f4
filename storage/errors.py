"""Storage-level errors; storage/ never imports sweep/, so it has its own root class.

The CLI catches `StorageError` next to `sweep.errors.SweepError` and prints one line.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage error a user can see."""


class InvalidStorageURL(StorageError):
    """The storage URL is malformed or names an unsupported database."""


class StorageUnavailable(StorageError):
    """The database cannot be reached (down, wrong host, bad credentials)."""


class StorageInternalError(StorageError):
    """An unexpected database error, translated at the storage boundary."""


class ModelNotFound(StorageError):
    """No registry entry for that operation (or version)."""


class ChecksumMismatch(StorageError):
    """A stored model's bytes do not match their recorded sha256."""


class IncompatibleSchema(StorageError):
    """The database holds a newer schema than this code understands; upgrade the code."""


class InvalidRegistryValue(StorageError, ValueError):
    """A value given to the registry cannot be stored (too long, not JSON, wrong type)."""


class PromotionRefused(StorageError):
    """A promotion's guard said no inside the promotion's transaction (e.g. the trial that
    trained the model was failed by another worker meanwhile); nothing was written."""


class CampaignConflict(StorageError):
    """A campaign cannot be created or joined as asked (its stored identity differs, or its
    name differs from an existing one only by case); nothing was written."""


class DamagedRegistry(StorageError):
    """A row of our tables holds a value this code cannot read (edited by hand, or damaged)."""


class ForeignDatabase(StorageError):
    """The database belongs to another application (a SQLite file with other tables)."""
