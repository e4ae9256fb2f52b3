"""MAVLink FTP wire format: the 12-byte header, opcodes, error codes and ArduPilot's CRC32.

Shared by the agent's FTP client and the virtual FC's server so both speak exactly the format
of the MAVLink FTP specification as ArduPilot implements it (``GCS_FTP.cpp``).
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

HEADER = struct.Struct("<HBBBBBxI")  # seq, session, opcode, size, req_opcode, burst_complete, pad, offset
MAX_DATA = 239
PAYLOAD_LEN = HEADER.size + MAX_DATA


class Op(enum.IntEnum):
    NONE = 0
    TERMINATE_SESSION = 1
    RESET_SESSIONS = 2
    LIST_DIRECTORY = 3
    OPEN_FILE_RO = 4
    READ_FILE = 5
    CREATE_FILE = 6
    WRITE_FILE = 7
    REMOVE_FILE = 8
    CREATE_DIRECTORY = 9
    REMOVE_DIRECTORY = 10
    OPEN_FILE_WO = 11
    TRUNCATE_FILE = 12
    RENAME = 13
    CALC_FILE_CRC32 = 14
    BURST_READ_FILE = 15
    ACK = 128
    NAK = 129


class FtpErr(enum.IntEnum):
    NONE = 0
    FAIL = 1
    FAIL_ERRNO = 2
    INVALID_DATA_SIZE = 3
    INVALID_SESSION = 4
    NO_SESSIONS_AVAILABLE = 5
    EOF = 6
    UNKNOWN_COMMAND = 7
    FILE_EXISTS = 8
    FILE_PROTECTED = 9
    FILE_NOT_FOUND = 10


def error_name(code: int) -> str:
    try:
        return FtpErr(code).name.lower().replace("_", "-")
    except ValueError:
        return f"error-{code}"


@dataclass
class FtpPacket:
    """One FTP payload (the ``payload`` field of FILE_TRANSFER_PROTOCOL)."""

    seq: int
    session: int
    opcode: int
    size: int = 0
    req_opcode: int = 0
    burst_complete: int = 0
    offset: int = 0
    data: bytes = b""

    def pack(self) -> list[int]:
        body = self.data[:MAX_DATA]
        raw = HEADER.pack(self.seq & 0xFFFF, self.session & 0xFF, self.opcode, self.size & 0xFF,
                          self.req_opcode, self.burst_complete, self.offset & 0xFFFFFFFF) + body
        return list(raw.ljust(PAYLOAD_LEN, b"\0"))

    @classmethod
    def unpack(cls, payload: Sequence[int] | bytes) -> FtpPacket:
        raw = bytes(payload).ljust(PAYLOAD_LEN, b"\0")
        seq, session, opcode, size, req_opcode, burst_complete, offset = HEADER.unpack_from(raw)
        return cls(seq, session, opcode, size, req_opcode, burst_complete, offset,
                   raw[HEADER.size:HEADER.size + MAX_DATA])

    @property
    def body(self) -> bytes:
        """The data bytes the sender declared with ``size`` (anything after it is stale)."""
        return self.data[:min(self.size, MAX_DATA)]

    @property
    def error(self) -> int | None:
        """The NAK error code, or None for a non-NAK."""
        if self.opcode != Op.NAK:
            return None
        return self.data[0] if self.size >= 1 else FtpErr.FAIL


def crc32_ardupilot(data: bytes, crc: int = 0) -> int:
    """ArduPilot's ``crc_crc32``: reflected CRC-32, initial register ``crc``, no final XOR."""
    return zlib.crc32(data, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
