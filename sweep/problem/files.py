"""Reading a user's file under a bound: a campaign file, a table.

Only a regular file is read, opened without blocking (a FIFO without a writer would hang),
and never past its limit (``/dev/zero`` or a file that grows while it is read would fill the
memory). Every refusal is one `ConfigError` line naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sweep.errors import ConfigError

__all__ = ["read_bounded"]

_CHUNK = 1 << 20


def read_bounded(path: str | Path, limit: int, where: str, kind: str) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them.

    Args:
        where: The file as messages name it (``config file 'x.toml'``).
        kind: What it should be, for messages (``a TOML file``, ``a table file``).

    Raises:
        ConfigError: missing, a directory, not a regular file, over `limit` (before or while
            reading it), or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not {kind}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {where}: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{where} is a directory, not {kind}")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where} is not a regular file (a FIFO, device or socket)")
        if info.st_size > limit:
            raise ConfigError(
                f"{where} is {info.st_size:,} bytes; {kind} may be at most {limit:,}"
            )
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > limit:  # it grew while we read it
                raise ConfigError(f"{where} is over {limit:,} bytes, the limit")
            chunks.append(chunk)
    except OSError as e:
        raise ConfigError(f"cannot read {where}: {e.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)
