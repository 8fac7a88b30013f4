"""Every file the sweep writes for a user (`pull -o`, `report -o`), written one safe way.

An output path is refused, in one line and before any work, when it is a symbolic link (also
``/proc/self/fd/N``), a directory, a FIFO, device or socket, in a missing folder, an existing
file without ``--force``, or the storage's own SQLite file (or its journal) even with
``--force``. The write is atomic (a temp file in the same folder, then a rename or a link), so
a crash leaves the old file or none; an OS error (read-only file system, full disk, name too
long) is one line too.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from sweep.errors import ConfigError, SweepError

__all__ = ["OutputError", "check_output_path", "write_atomically"]

_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


class OutputError(SweepError):
    """An output file cannot be written where the user asked; nothing was written there."""


def _show(path: Path) -> str:
    text = str(path)
    return repr(text if len(text) <= 200 else text[:197] + "...")


def _reason(error: OSError) -> str:
    if error.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    if error.errno == errno.EROFS:
        return "the file system is read-only"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return error.strerror or type(error).__name__


def check_output_path(
    path: Path,
    *,
    force: bool,
    suffix: str | None = None,
    database: Path | None = None,
) -> None:
    """Refuse `path` as an output file unless writing it is safe and was asked for.

    `database` is the storage's SQLite file (`storage.Database.sqlite_path`), never written over.

    Raises:
        ConfigError: the path is not allowed (see the module docstring).
        OutputError: the file system cannot even be asked about it (name too long, ...).
    """
    shown = _show(path)
    if suffix is not None and path.suffix != suffix:
        raise ConfigError(f"output path {shown} must end in {suffix}")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as e:
        raise OutputError(f"cannot write {shown}: {_reason(e)}") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise ConfigError(
                f"output path {shown} is a symbolic link; refusing to write through it"
            )
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"output path {shown} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"output path {shown} is not a regular file (a FIFO, device or socket); "
                "refusing to write to it"
            )
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"output folder {_show(parent)} does not exist")
    if database is not None and _is_database(path, database):
        raise ConfigError(
            f"output path {shown} is the storage's own database file; pick another path"
        )
    if info is not None and not force:
        raise ConfigError(f"output path {shown} exists; pass --force to overwrite it")


def _is_database(path: Path, database: Path) -> bool:
    """Whether `path` is the SQLite file (or one of its journals), by name or by inode."""
    target = path.resolve(strict=False)
    for companion in _SQLITE_COMPANIONS:
        candidate = Path(f"{database}{companion}")
        if target == candidate.resolve(strict=False):
            return True
        try:
            if candidate.exists() and path.exists() and os.path.samefile(candidate, path):
                return True
        except OSError:
            continue
    return False


def write_atomically(path: Path, data: bytes, *, force: bool, mode: int = 0o644) -> None:
    """Write `data` to `path` completely or not at all; never over a file without `force`.

    The check-then-write gap is closed at the end: without `force` the temp file is linked
    into place, which fails if `path` appeared meanwhile; with it, a rename replaces whatever
    is there (a symlink planted meanwhile is replaced, not followed).

    Raises:
        ConfigError: `path` appeared meanwhile and `force` is off.
        OutputError: the file system refused the write (one line: read-only, full, ...).
    """
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {_show(path)}: {_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        if force:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if `path` appeared meanwhile: never overwrite
            os.unlink(temp)
    except FileExistsError:
        os.unlink(temp)
        raise ConfigError(
            f"output path {_show(path)} exists; pass --force to overwrite it"
        ) from None
    except OSError as e:
        if os.path.exists(temp):
            os.unlink(temp)
        raise OutputError(f"cannot write {_show(path)}: {_reason(e)}") from None
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
