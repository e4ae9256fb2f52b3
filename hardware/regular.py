"""Opening a file that must be a regular file, without ever blocking on one that is not.

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
