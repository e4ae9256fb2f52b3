"""File I/O at the edge: bounded reads and atomic writes, so nothing is ever written half-way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from attest.errors import FormatError


def read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """Read a whole file, refusing one larger than ``max_bytes`` before reading it."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise FormatError(f"{what} {path}", "file not found") from None
    except IsADirectoryError:
        raise FormatError(f"{what} {path}", "is a directory, not a file") from None
    except OSError as exc:
        raise FormatError(f"{what} {path}", f"cannot read ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise FormatError(f"{what} {path}", f"is larger than the limit of {max_bytes} bytes")
    return data


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
