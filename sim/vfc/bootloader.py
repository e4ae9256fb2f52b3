"""An emulated ArduPilot bootloader on a pseudo-terminal, built from the published protocol.

It answers GET_SYNC, GET_DEVICE (bootloader revision, board id, board revision, flash size),
GET_CRC, GET_SN and GET_CHIP the way ``AP_Bootloader/bl_protocol.cpp`` does: data, then
``INSYNC OK``; ``INSYNC INVALID`` for a bad argument or a missing ``EOC``. Any other opcode is
recorded in :attr:`BootloaderEmulator.refused` and answered ``INVALID``, so a test can prove the
client never tried to program, erase or reboot. Its CRC is a bytewise table CRC, written
separately from the client's zlib-based one, so the two check each other.

    with BootloaderEmulator(flash=image, board_id=9, flash_size=2 * 1024 * 1024) as emu:
        with Bootloader.open(emu.port) as boot:
            boot.identify()
"""

from __future__ import annotations

import os
import select
import struct
import threading
import tty

from sim.launchers.service import Service

INSYNC, EOC, OK, FAILED, INVALID = 0x12, 0x20, 0x10, 0x11, 0x13
GET_SYNC, GET_DEVICE, GET_CRC, GET_SN, GET_CHIP = 0x21, 0x22, 0x29, 0x2B, 0x2C
ARG_BYTES = {GET_SYNC: 0, GET_DEVICE: 1, GET_CRC: 0, GET_SN: 4, GET_CHIP: 0}
POLL_SECONDS = 0.05
ARG_TIMEOUT = 0.5  # the real bootloader waits a few ms for arguments


def _table() -> list[int]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        out.append(c)
    return out


_CRC_TABLE = _table()


def bl_crc32(data: bytes, state: int = 0) -> int:
    """``crc_crc32`` of AP_Math: reflected CRC-32 table, initial value 0, no final XOR."""
    for b in data:
        state = _CRC_TABLE[(state ^ b) & 0xFF] ^ (state >> 8)
    return state


class BootloaderEmulator(Service):
    """A board in its bootloader, at :attr:`port` (a pty slave path) until :meth:`stop`."""

    def __init__(self, flash: bytes, *, board_id: int, flash_size: int, board_rev: int = 0, bl_rev: int = 5,
                 chip_id: int = 0x10016450, serial: bytes = bytes(range(1, 13)), mode: str = "normal") -> None:
        if len(flash) > flash_size:
            raise ValueError("flash contents are larger than the flash")
        if mode not in ("normal", "silent", "garbage"):
            raise ValueError("mode is normal, silent or garbage")
        self.flash = flash + b"\xff" * (flash_size - len(flash))  # erased flash reads 0xff
        self.board_id, self.board_rev, self.bl_rev = board_id, board_rev, bl_rev
        self.flash_size, self.chip_id, self.serial = flash_size, chip_id, serial
        self.mode = mode
        self.received: list[int] = []  # every opcode seen
        self.refused: list[int] = []  # opcodes outside the read-only subset
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = self._slave = -1
        self.port = ""

    def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._run, name="bootloader-emu", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def _read(self, timeout: float) -> int | None:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return None
        try:
            data = os.read(self._master, 1)
        except OSError:
            return None
        return data[0] if data else None

    def _write(self, data: bytes) -> None:
        os.write(self._master, data)

    def _run(self) -> None:
        while not self._stop.is_set():
            op = self._read(POLL_SECONDS)
            if op is None or op == EOC:
                continue
            self.received.append(op)
            if self.mode == "silent":
                continue
            if self.mode == "garbage":
                self._write(b"\x55\xaa")
                continue
            if op not in ARG_BYTES:
                self.refused.append(op)
                self._write(bytes([INSYNC, INVALID]))
                continue
            args = bytearray()
            while len(args) < ARG_BYTES[op]:
                b = self._read(ARG_TIMEOUT)
                if b is None:
                    break
                args.append(b)
            if len(args) < ARG_BYTES[op] or self._read(ARG_TIMEOUT) != EOC:
                self._write(bytes([INSYNC, INVALID]))
                continue
            reply = self._answer(op, bytes(args))
            self._write(bytes([INSYNC, INVALID]) if reply is None else reply + bytes([INSYNC, OK]))

    def _answer(self, op: int, args: bytes) -> bytes | None:
        if op == GET_SYNC:
            return b""
        if op == GET_DEVICE:
            values = {1: self.bl_rev, 2: self.board_id, 3: self.board_rev, 4: self.flash_size}
            value = values.get(args[0])
            return None if value is None else struct.pack("<I", value)
        if op == GET_CRC:
            return struct.pack("<I", bl_crc32(self.flash))
        if op == GET_CHIP:
            return struct.pack("<I", self.chip_id) if self.bl_rev >= 5 else None
        if op == GET_SN:
            addr = struct.unpack("<I", args)[0]
            if self.bl_rev < 4 or addr % 4 or addr + 4 > len(self.serial):
                return None
            return self.serial[addr:addr + 4]
        return None
