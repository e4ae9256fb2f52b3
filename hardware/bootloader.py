"""Read-only client for the ArduPilot/PX4 serial bootloader, and the flash-CRC measurement.

At power-up an ArduPilot or PX4 board runs a bootloader that answers a small serial protocol
(ArduPilot ``Tools/scripts/uploader.py``, ``AP_Bootloader/bl_protocol.cpp``): a command byte,
its arguments, ``EOC`` (0x20); the reply is any data, then ``INSYNC`` (0x12) and ``OK`` (0x10),
``FAILED`` (0x11) or ``INVALID`` (0x13). Multi-byte values are little-endian.

This client sends only the read-only commands below and refuses any other opcode, so it can
never program, erase or reboot a board; the board stays in its bootloader until power-cycled.
Every read has a timeout and every failure is one :class:`BootloaderError` naming the port.

:func:`measure_flash` turns the board's flash CRC and an approved image into a
``firmware-image`` measurement of strength ``image-and-bootloader``. The image's SHA-256 is
claimed only when the board's CRC and board id match it; otherwise the measurement carries the
board's CRC alone, so the appraisal fails with ``firmware-mismatch``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import serial

from attest.errors import FlightSealError
from attest.limits import LIMITS
from attest.models import Kind, Measurement, Strength
from hardware.firmware_image import FirmwareImage

INSYNC, EOC = 0x12, 0x20
OK, FAILED, INVALID, BAD_SILICON_REV = 0x10, 0x11, 0x13, 0x14
GET_SYNC, GET_DEVICE, GET_CRC, GET_SN, GET_CHIP = 0x21, 0x22, 0x29, 0x2B, 0x2C
INFO_BL_REV, INFO_BOARD_ID, INFO_BOARD_REV, INFO_FLASH_SIZE = 1, 2, 3, 4
READ_ONLY = frozenset({GET_SYNC, GET_DEVICE, GET_CRC, GET_SN, GET_CHIP})
NAMES = {GET_SYNC: "GET_SYNC", GET_DEVICE: "GET_DEVICE", GET_CRC: "GET_CRC", GET_SN: "GET_SN", GET_CHIP: "GET_CHIP"}
BL_REV_MIN, BL_REV_MAX = 2, 5  # as uploader.py
SN_BYTES = 12  # STM32 96-bit unique id, read 4 bytes at a time
MAX_FLASH_BYTES = LIMITS.max_flash_bytes
SYNC_ATTEMPTS = 3
DEFAULT_TIMEOUT = 1.0
CRC_TIMEOUT = 10.0  # the board CRCs its whole flash before answering
COMPONENT = "fc.firmware-image"


class BootloaderError(FlightSealError):
    """The bootloader did not answer, answered garbage, or refused a command."""


@dataclass(frozen=True)
class BoardInfo:
    bl_rev: int
    board_id: int
    board_rev: int
    flash_size: int
    chip_id: int | None = None  # GET_CHIP, bootloader protocol 5+
    serial: str = ""  # GET_SN, protocol 4+: the MCU unique id, hex


class Bootloader:
    """One serial connection to a board in its bootloader."""

    def __init__(self, port: Any, name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._port = port
        self.name = name
        self.timeout = timeout

    @classmethod
    def open(cls, device: str, baud: int = 115200, timeout: float = DEFAULT_TIMEOUT) -> Bootloader:
        """Open the serial port of an FC held in its bootloader.

        Raises:
            BootloaderError: the port cannot be opened (the message says what to check)."""
        try:
            port = serial.Serial(device, baud, timeout=timeout, write_timeout=timeout, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            raise BootloaderError(f"cannot open serial port {device} ({exc}); check the cable, the device name "
                                  "and that no other program (a GCS, the agent's MAVLink link) holds it") from None
        return cls(port, device, timeout)

    def __enter__(self) -> Bootloader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._port.close()

    def _send(self, opcode: int, args: bytes = b"") -> None:
        if opcode not in READ_ONLY:
            raise BootloaderError(f"refusing to send bootloader opcode 0x{opcode:02x}: FlightSeal only reads")
        try:
            self._port.write(bytes([opcode]) + args + bytes([EOC]))
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise BootloaderError(f"cannot write to {self.name} ({exc})") from None

    def _recv(self, n: int, what: str, timeout: float | None = None) -> bytes:
        self._port.timeout = self.timeout if timeout is None else timeout
        try:
            data = bytes(self._port.read(n))
        except (serial.SerialException, OSError) as exc:
            raise BootloaderError(f"cannot read from {self.name} ({exc})") from None
        if len(data) < n and len(data) >= 2 and data[:2] in (bytes([INSYNC, INVALID]), bytes([INSYNC, FAILED])):
            verdict = "rejected it as invalid" if data[1] == INVALID else "reports it failed"
            raise BootloaderError(f"the bootloader on {self.name} {verdict} (asked for {what})")
        if len(data) < n:
            raise BootloaderError(f"no {what} from the bootloader on {self.name} within {self._port.timeout:g} s "
                                  f"(got {len(data)} of {n} bytes): is the board in its bootloader? Power-cycle it "
                                  "with the cable connected; the bootloader listens only briefly after reset")
        return data

    def _sync(self, opcode: int) -> None:
        insync, status = self._recv(2, f"reply to {NAMES[opcode]}")
        if insync != INSYNC:
            raise BootloaderError(f"{self.name} answered 0x{insync:02x} instead of INSYNC to {NAMES[opcode]}: "
                                  "not a bootloader, or the wrong baud rate")
        if status == INVALID:
            raise BootloaderError(f"the bootloader on {self.name} rejected {NAMES[opcode]} as invalid "
                                  "(too old a bootloader protocol?)")
        if status == FAILED:
            raise BootloaderError(f"the bootloader on {self.name} reports {NAMES[opcode]} failed")
        if status == BAD_SILICON_REV:
            raise BootloaderError(f"the bootloader on {self.name} reports a bad silicon revision")
        if status != OK:
            raise BootloaderError(f"{self.name} answered 0x{status:02x} instead of OK to {NAMES[opcode]}")

    def sync(self) -> None:
        """Get in step with the bootloader: discard stale input, GET_SYNC, expect INSYNC OK."""
        last: BootloaderError | None = None
        for _ in range(SYNC_ATTEMPTS):
            try:
                self._port.reset_input_buffer()
                self._send(GET_SYNC)
                self._sync(GET_SYNC)
                return
            except BootloaderError as exc:
                last = exc
        assert last is not None
        raise last

    def _u32(self, opcode: int, args: bytes = b"", timeout: float | None = None) -> int:
        self._send(opcode, args)
        value = int(struct.unpack("<I", self._recv(4, f"value for {NAMES[opcode]}", timeout))[0])
        self._sync(opcode)
        return value

    def get_device(self, param: int) -> int:
        return self._u32(GET_DEVICE, bytes([param]))

    def flash_crc(self) -> int:
        """The CRC the bootloader computes over the whole application flash (GET_CRC, protocol 3+)."""
        return self._u32(GET_CRC, timeout=max(self.timeout, CRC_TIMEOUT))

    def chip_id(self) -> int:
        return self._u32(GET_CHIP)

    def serial_number(self) -> str:
        words = []
        for addr in range(0, SN_BYTES, 4):
            self._send(GET_SN, struct.pack("<I", addr))
            words.append(self._recv(4, "serial number word", None)[::-1])  # uploader.py shows each word reversed
            self._sync(GET_SN)
        return b"".join(words).hex()

    def identify(self) -> BoardInfo:
        self.sync()
        bl_rev = self.get_device(INFO_BL_REV)
        if not BL_REV_MIN <= bl_rev <= BL_REV_MAX:
            raise BootloaderError(f"bootloader on {self.name} speaks protocol {bl_rev}; FlightSeal knows "
                                  f"{BL_REV_MIN} to {BL_REV_MAX}")
        board_id = self.get_device(INFO_BOARD_ID)
        board_rev = self.get_device(INFO_BOARD_REV)
        flash_size = self.get_device(INFO_FLASH_SIZE)
        if not 0 < flash_size <= MAX_FLASH_BYTES:
            raise BootloaderError(f"bootloader on {self.name} reports a flash size of {flash_size} bytes; "
                                  f"expected 1 to {MAX_FLASH_BYTES}")
        return BoardInfo(bl_rev, board_id, board_rev, flash_size,
                         self.chip_id() if bl_rev >= 5 else None,
                         self.serial_number() if bl_rev >= 4 else "")


def measure_flash(boot: Bootloader, image: FirmwareImage) -> Measurement:
    """Compare the board's flash CRC with the approved image's; see the module docstring."""
    info = boot.identify()
    if info.bl_rev < 3:
        raise BootloaderError(f"bootloader on {boot.name} (protocol {info.bl_rev}) has no GET_CRC; "
                              "update the bootloader or measure through @SYS/flash.bin")
    board_crc = boot.flash_crc()
    expected = image.expected_crcs(info.flash_size)
    padding = next((rule for rule, crc in expected.items() if crc == board_crc), "")
    board_ok = image.board_id is None or image.board_id == info.board_id
    digests = {"crc32": f"{board_crc:08x}"}
    if padding and board_ok:
        digests["sha256"] = image.sha256
    claims: dict[str, str | int | bool] = {
        "board_id": info.board_id, "board_rev": info.board_rev, "bl_rev": info.bl_rev,
        "flash_size": info.flash_size, "crc": f"{board_crc:08x}",
        "crc_expected": f"{expected[padding or 'erased-ff']:08x}",
        "crc_match": bool(padding), "image": image.name, "compared_image_sha256": image.sha256,
    }
    if image.board_id is not None:
        claims["image_board_id"] = image.board_id
    if padding:
        claims["crc_padding"] = padding
    if info.chip_id is not None:
        claims["chip_id"] = info.chip_id
    if info.serial:
        claims["serial"] = info.serial
    return Measurement(COMPONENT, Kind.FIRMWARE_IMAGE, digests, f"bootloader:{boot.name}",
                       Strength.IMAGE_AND_BOOTLOADER, claims)
