"""Opening a file that must be a regular file, without ever blocking on one that is not; bounded
reads and write-once files (hardware/files.py re-exports them: hardware/ sits below agent/).

A FIFO (or a device) put where a firmware image, a PIN file or a package file is expected would
block ``open`` or never end a read (issue 11). Every path FlightSeal reads is opened here: without
blocking, then checked with ``fstat`` before the first byte is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from attest.errors import FormatError


class NotRegularFile(OSError):
    """The path is a FIFO, socket, device or directory."""


def open_regular(path: Path) -> BinaryIO:
    """A binary file object for ``path``; OSError (``strerror`` says why) if it cannot be, or if it is
    not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device?)"
            raise NotRegularFile(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL, f"is {kind}", str(path))
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f


def read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """Read a whole regular file, refusing one larger than ``max_bytes`` before reading it.

    Opened without blocking and checked to be a regular file before any read: a FIFO (or a device)
    in place of a file would otherwise block, or never end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FormatError(f"{what} {path}", "file not found") from None
    except IsADirectoryError:
        raise FormatError(f"{what} {path}", "is a directory, not a file") from None
    except OSError as exc:
        raise FormatError(f"{what} {path}", f"cannot read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FormatError(f"{what} {path}", "is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise FormatError(f"{what} {path}", "is not a regular file (a FIFO, socket or device?)")
        if info.st_size > max_bytes:
            raise FormatError(f"{what} {path}", f"is larger than the limit of {max_bytes} bytes")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise FormatError(f"{what} {path}", f"cannot read ({exc.strerror})") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise FormatError(f"{what} {path}", f"is larger than the limit of {max_bytes} bytes")
    return data


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file that must not exist yet (a key: never overwritten), fsync'd; FileExistsError or
    OSError for the caller to name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
