"""The virtual FC's file system, as ArduPilot's ``AP_Filesystem`` shows it over MAVLink FTP.

Plain paths map into a host directory (SITL's working directory: ``scripts/``, ``terrain/``),
and three virtual trees sit beside them, with the quirks SITL was recorded with:

* ``@SYS/``: fixed file list; ``stat`` says 100000 bytes for everything but ``storage.bin``
  (16384); ``flash.bin`` exists only when a flash image is configured (a ChibiOS board), and
  then also reports 100000, not its real size.
* ``@PARAM/param.pck``: generated on the first read, padded for that read's size; later reads
  of another size fail with EINVAL, as in ``AP_Filesystem_Param``. ``stat`` gives the estimate
  12 × parameter count. ``@PARAM`` itself cannot be listed.
* ``@ROMFS/``: read-only files built into the firmware.

Unlike SITL, ``..`` never escapes the host directory: a test rig must not expose its host.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SYS_FILES = ("threads.txt", "tasks.txt", "dma.txt", "memory.txt", "uarts.txt", "timers.txt", "can_log.txt",
             "can0_stats.txt", "can1_stats.txt", "crash_dump.bin", "storage.bin")
SYS_TEXT_SIZE = 100000
STORAGE_SIZE = 16384
PARAM_FILE = "param.pck"


class FsError(Exception):
    """A file-system call failed with an errno, as ArduPilot's would."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.errno = code


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool
    size: int = 0


class OpenFile:
    """An open file: reads at an offset; writes for files opened for writing."""

    def read(self, offset: int, count: int) -> bytes:
        raise FsError(errno.EBADF)

    def write(self, offset: int, data: bytes) -> None:
        raise FsError(errno.EBADF)

    def close(self) -> None:
        pass


class BytesFile(OpenFile):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, count: int) -> bytes:
        return self.data[offset:offset + count]


class ParamPackFile(OpenFile):
    """``param.pck``: content fixed at the first read, for that read's size."""

    def __init__(self, make: Callable[[int], bytes]) -> None:
        self.make = make
        self.read_size = 0
        self.data = b""

    def read(self, offset: int, count: int) -> bytes:
        if self.read_size == 0 and count > 0:
            self.read_size = count
            self.data = self.make(count)
        if count != self.read_size:
            raise FsError(errno.EINVAL)
        return self.data[offset:offset + count]


class HostFile(OpenFile):
    def __init__(self, path: Path, writable: bool) -> None:
        flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if writable else os.O_RDONLY
        try:
            self.fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise FsError(exc.errno or errno.EIO) from None

    def read(self, offset: int, count: int) -> bytes:
        return os.pread(self.fd, count, offset)

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class VehicleFiles:
    root: Path
    param_pack: Callable[[int], bytes]
    param_count: Callable[[], int]
    flash_image: bytes | None = None
    romfs: dict[str, bytes] = field(default_factory=dict)
    uarts_text: Callable[[], bytes] = lambda: b"UARTV1\n"

    # ---- path handling
    def _host(self, path: str) -> Path:
        rel = path.lstrip("/")
        target = (self.root / rel).resolve()
        root = self.root.resolve()
        if target != root and root not in target.parents:
            raise FsError(errno.ENOENT)
        return target

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        p = path.lstrip("/")
        for tree in ("@SYS", "@PARAM", "@ROMFS"):
            if p == tree or p.startswith(tree + "/"):
                return tree, p[len(tree) + 1:]
        return "", p

    # ---- calls used by the FTP server
    def stat_size(self, path: str) -> int:
        tree, rest = self._split(path)
        if tree == "@SYS":
            if rest == "storage.bin":
                return STORAGE_SIZE
            if rest in SYS_FILES or (rest == "flash.bin" and self.flash_image is not None):
                return SYS_TEXT_SIZE
            raise FsError(errno.ENOENT)
        if tree == "@PARAM":
            if rest.split("?")[0] == PARAM_FILE:
                return 12 * self.param_count()
            raise FsError(errno.ENOENT)
        if tree == "@ROMFS":
            if rest in self.romfs:
                return len(self.romfs[rest])
            raise FsError(errno.ENOENT)
        try:
            st = self._host(rest).stat()
        except OSError as exc:
            raise FsError(exc.errno or errno.ENOENT) from None
        return st.st_size

    def open_read(self, path: str) -> OpenFile:
        tree, rest = self._split(path)
        if tree == "@SYS":
            if rest == "flash.bin" and self.flash_image is not None:
                return BytesFile(self.flash_image)
            if rest == "uarts.txt":
                return BytesFile(self.uarts_text())
            if rest == "storage.bin":
                return BytesFile(bytes(STORAGE_SIZE))
            if rest in SYS_FILES and rest != "crash_dump.bin":
                return BytesFile(f"{rest}: virtual FC\n".encode())
            raise FsError(errno.ENOENT)
        if tree == "@PARAM":
            if rest.split("?")[0] == PARAM_FILE:
                return ParamPackFile(self.param_pack)
            raise FsError(errno.ENOENT)
        if tree == "@ROMFS":
            if rest in self.romfs:
                return BytesFile(self.romfs[rest])
            raise FsError(errno.ENOENT)
        host = self._host(rest)
        if host.is_dir():
            raise FsError(errno.EISDIR)
        return HostFile(host, writable=False)

    def open_write(self, path: str) -> OpenFile:
        tree, rest = self._split(path)
        if tree:
            raise FsError(errno.EROFS)
        return HostFile(self._host(rest), writable=True)

    def list_dir(self, path: str) -> list[DirEntry]:
        tree, rest = self._split(path)
        if tree == "@SYS":
            if rest:
                raise FsError(errno.ENOENT)
            names = [*SYS_FILES, *(["flash.bin"] if self.flash_image is not None else [])]
            return [DirEntry(n, False, self.stat_size("@SYS/" + n)) for n in names]
        if tree == "@PARAM":
            raise FsError(errno.ENOENT)
        if tree == "@ROMFS":
            prefix = rest.rstrip("/") + "/" if rest else ""
            seen: dict[str, DirEntry] = {}
            for name, data in sorted(self.romfs.items()):
                if not name.startswith(prefix):
                    continue
                head, _, tail = name[len(prefix):].partition("/")
                seen.setdefault(head, DirEntry(head, bool(tail), 0 if tail else len(data)))
            if not seen and rest:
                raise FsError(0)  # ArduPilot's ROMFS opendir fails without setting errno: a stale one is sent
            return list(seen.values())
        host = self._host(rest)
        try:
            names = sorted(os.listdir(host))
        except OSError as exc:
            raise FsError(exc.errno or errno.ENOENT) from None
        out = [DirEntry(".", True), DirEntry("..", True)]
        for name in names:
            try:
                st = (host / name).stat()
            except OSError:
                continue
            is_dir = statmod.S_ISDIR(st.st_mode)
            if not rest and not is_dir:
                continue  # SITL's root listing stats "//name" on the host and so shows directories only
            out.append(DirEntry(name, is_dir, 0 if is_dir else st.st_size))
        if not rest:
            out += [DirEntry("@ROMFS", True), DirEntry("@SYS", True)]
        return out

    def read_all(self, path: str, block: int = 256) -> bytes:
        """The whole file, read in ``block``-byte reads (for CalcFileCRC32)."""
        f = self.open_read(path)
        try:
            chunks = []
            offset = 0
            while True:
                data = f.read(offset, block)
                if not data:
                    break
                chunks.append(data)
                offset += len(data)
            return b"".join(chunks)
        finally:
            f.close()

    def remove(self, path: str, directory: bool) -> None:
        tree, rest = self._split(path)
        if tree:
            raise FsError(errno.EROFS)
        host = self._host(rest)
        try:
            if directory:
                host.rmdir()
            else:
                host.unlink()
        except OSError as exc:
            raise FsError(exc.errno or errno.EIO) from None

    def mkdir(self, path: str) -> None:
        tree, rest = self._split(path)
        if tree:
            raise FsError(errno.EROFS)
        try:
            self._host(rest).mkdir()
        except OSError as exc:
            raise FsError(exc.errno or errno.EIO) from None

    def rename(self, old: str, new: str) -> None:
        if self._split(old)[0] or self._split(new)[0]:
            raise FsError(errno.EROFS)
        try:
            self._host(self._split(old)[1]).rename(self._host(self._split(new)[1]))
        except OSError as exc:
            raise FsError(exc.errno or errno.EIO) from None
