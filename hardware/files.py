"""File I/O at the edge: bounded reads and atomic writes, so nothing is ever written half-way."""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from attest.errors import FormatError
from hardware.regular import read_bounded, write_new  # the readers and writers hardware/ needs too

__all__ = ["read_bounded", "read_state_json", "write_atomic", "write_new"]


STALE_TEMP_S = 60.0  # a temporary file of write_atomic this old was left by a process killed mid-write


def _sweep_stale_temps(directory: Path, name: str) -> None:
    """Temporary files a killed writer left for ``name`` (issue 11): removed by the next write, once
    old enough that no live writer can still be filling them."""
    try:
        stale = [p for p in directory.glob(f".{glob.escape(name)}.*")
                 if time.time() - p.lstat().st_mtime > STALE_TEMP_S and stat.S_ISREG(p.lstat().st_mode)]
    except OSError:
        return
    for p in stale[:64]:
        with contextlib.suppress(OSError):
            p.unlink()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    directory = path.parent if str(path.parent) else Path(".")
    _sweep_stale_temps(directory, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except FileNotFoundError:
        raise FormatError(f"cannot write {path}", f"directory {directory} does not exist") from None
    except OSError as exc:
        raise FormatError(f"cannot write {path}", f"{exc.strerror} in {directory}") from None
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


def read_state_json(path: Path, what: str, max_bytes: int) -> Any:
    """A state file the agent or verifier wrote (strict JSON), or None when there is none.

    A symbolic link is refused, dangling or not: state that decides what counts as a rollback must
    not silently reset when a link points nowhere, nor be read from somewhere else.
    """
    from attest import jsonio

    if path.is_symlink():
        raise FormatError(f"{what} {path}", "is a symbolic link; state files must be regular files")
    if not os.path.lexists(path):
        return None
    return jsonio.loads(read_bounded(path, what, max_bytes), f"{what} {path}", max_bytes)
