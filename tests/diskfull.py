"""A real small file system to fill up: a tmpfs mounted in the test's temp dir.

Disk-full is tested on a real kernel file system, not by patching ``os.write``: tmpfs returns the
same short writes and ENOSPC a full SD card does. Mounting needs root (the CI machine runs as root);
elsewhere the tests skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(where: Path, size_kb: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(fs: Path, leave: int = 0) -> Path:
    """Fill ``fs`` until at most ``leave`` bytes are free; returns the filler, delete it to free space."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
            if free <= leave:
                break
            try:
                os.write(fd, b"\0" * max(1, min(65536, free - leave)))
            except OSError:
                break
    finally:
        os.close(fd)
    return filler
