"""A campaign's tables: where each came from, what it holds, and its bytes for the database.

``[datasets] gas = { file = "gas.csv", target = "P" }`` (or ``--data gas=gas.csv --target
P``) names an operation defined by a table. The file is read and validated whole when the
campaign is described, before anything is written; the campaign then stores it, compressed
and checksummed, in the database (`storage.DatasetRows`), so a worker on another host needs
only the database URL. The stored campaign keeps this source's facts (target, inputs, rows,
checksum), never the path's contents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError
from sweep.problem.expressions import show
from sweep.problem.operations import Operation, check_new_name, make_table_operation
from sweep.problem.sampling import decide_table_integer_valued
from sweep.problem.tables import Table, decode_table, encode_table, read_table, table_sha256

__all__ = ["DatasetSource", "parse_data_flag", "parse_datasets"]

_SOURCE_KEYS = ("file", "target", "inputs")
_STORED_KEYS = ("file", "target", "inputs", "sha256", "rows", "integer_valued")
_DATA_FLAG_EXAMPLE = "--data gas=gas.csv --target P"


@dataclass(frozen=True)
class DatasetSource:
    """One table operation: its file as given, its columns, and the checksum of its stored
    bytes. `table` and `blob` are present where the file was read (or the bytes loaded)."""

    name: str
    file: str
    target: str
    inputs: tuple[str, ...]
    sha256: str
    rows: int
    integer_valued: bool
    table: Table | None = field(default=None, compare=False, repr=False)
    blob: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def read(
        cls, name: str, file: str, target: str, inputs: Sequence[str] | None = None,
        base_dir: Path | None = None,
    ) -> DatasetSource:
        """Read and validate a table file (relative paths from `base_dir`, the config's
        folder, else the working directory).

        Raises:
            ConfigError: one line naming the file, row and column of the first problem.
        """
        path = Path(file)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        table = read_table(path, target=target, inputs=inputs, name=name)
        blob = encode_table(table)
        return cls(
            name=name,
            file=file,
            target=table.target,
            inputs=table.inputs,
            sha256=table_sha256(blob),
            rows=table.rows,
            integer_valued=decide_table_integer_valued(table),
            table=table,
            blob=blob,
        )

    def operation(self) -> Operation:
        return make_table_operation(self.name, self.inputs, self.target, self.integer_valued)

    def with_blob(self, blob: bytes) -> DatasetSource:
        """This source with its table decoded from stored bytes (checksum checked)."""
        table = decode_table(blob, sha256=self.sha256)
        if table.inputs != self.inputs or table.target != self.target:
            raise ConfigError(
                f"the stored table of {self.name!r} has columns {', '.join(table.inputs)} -> "
                f"{table.target}, but the campaign records {', '.join(self.inputs)} -> "
                f"{self.target}; the database was changed by hand"
            )
        return DatasetSource(
            self.name, self.file, self.target, self.inputs, self.sha256, self.rows,
            self.integer_valued, table, blob,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "target": self.target,
            "inputs": list(self.inputs),
            "sha256": self.sha256,
            "rows": self.rows,
            "integer_valued": self.integer_valued,
        }

    def identity(self) -> dict[str, Any]:
        """What makes trials comparable: the table's content, not where the file was."""
        out = self.to_dict()
        del out["file"]
        return out

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> DatasetSource:
        """A stored source (its table stays in the database until `with_blob`)."""
        unknown = sorted(str(key) for key in raw if key not in _STORED_KEYS)
        missing = [key for key in _STORED_KEYS if key not in raw]
        if unknown or missing:
            raise ConfigError(
                f"stored dataset {name!r} cannot be read ("
                + (f"unknown key {unknown[0]!r}" if unknown else f"no {missing[0]!r}")
                + "); it was damaged or written by an incompatible version of sweep"
            )
        inputs = raw["inputs"]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise ConfigError(f"stored dataset {name!r} has inputs {inputs!r}, not names")
        source = cls(
            name=name,
            file=str(raw["file"]),
            target=str(raw["target"]),
            inputs=tuple(inputs),
            sha256=str(raw["sha256"]),
            rows=int(raw["rows"]),
            integer_valued=bool(raw["integer_valued"]),
        )
        source.operation()  # the name and inputs must still make an operation
        return source


def parse_datasets(raw: object, base_dir: Path | None) -> dict[str, DatasetSource]:
    """The ``[datasets]`` table of a campaign file, every table read and validated."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"datasets must be a TOML table, got {raw!r}")
    out: dict[str, DatasetSource] = {}
    for name, entry in raw.items():
        where = f"datasets.{name}"
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{where} must be a table like {{ file = \"gas.csv\", target = \"P\" }}, "
                f"got {entry!r}"
            )
        unknown = sorted(str(key) for key in entry if key not in _SOURCE_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key {where}.{unknown[0]}; allowed: {', '.join(_SOURCE_KEYS)}"
            )
        file, target, inputs = entry.get("file"), entry.get("target"), entry.get("inputs")
        if not isinstance(file, str) or not file:
            raise ConfigError(f"{where}.file must be the path of a CSV or Parquet file")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{where}.target must name the column to predict")
        if inputs is not None and (
            not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs)
        ):
            raise ConfigError(f"{where}.inputs must be a list of column names, got {inputs!r}")
        _check_operation_name(str(name), where)
        out[str(name)] = DatasetSource.read(str(name), file, target, inputs, base_dir)
    return out


def _check_operation_name(name: str, where: str) -> None:
    try:
        check_new_name(name)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def parse_data_flag(text: str) -> tuple[str, str]:
    """``NAME=FILE`` from ``--data``.

    Raises:
        ConfigError: no '=', or an empty or malformed name, or no file.
    """
    name, separator, file = text.partition("=")
    name, file = name.strip(), file.strip()
    if not separator or not name or not file:
        raise ConfigError(
            f"--data {show(text)} is not NAME=FILE; write e.g. {_DATA_FLAG_EXAMPLE}"
        )
    _check_operation_name(name, f"--data {show(text)}")
    return name, file
