"""The operator-challenge wire format, carried in MAVLink TUNNEL (385) payloads.

TUNNEL is a common.xml message with target system/component fields, so ArduPilot routes it
between its links (GCS radio ↔ companion port) like any targeted message: no new dialect, nothing
the FC must know. Our payload type is in the private range (32768-65535). See ADR 0004.

Every TUNNEL payload is at most 128 bytes::

    op (u8) | session (u32 LE) | body
    CHALLENGE  body = nonce length (u8) | nonce (16..64 bytes)
    OFFER      body = blob length (u32) | chunk count (u16) | SHA-256 of the blob (32)
    CHUNK      body = index (u16) | data (≤ 121 bytes)
    RESEND     body = count (u8) | indices (u16 each, ≤ 61)
    ERROR      body = UTF-8 text (≤ 123 bytes)

The blob is the attestation envelope compressed with zlib.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from attest.errors import FormatError

PAYLOAD_TYPE = 0xF5E1  # FlightSeal challenge (private range)
TUNNEL_MAX = 128
HEADER = struct.Struct("<BI")
CHUNK_DATA = TUNNEL_MAX - HEADER.size - 2
MAX_RESEND = (TUNNEL_MAX - HEADER.size - 1) // 2
MAX_BLOB_BYTES = 512 * 1024
MAX_CHUNKS = (MAX_BLOB_BYTES + CHUNK_DATA - 1) // CHUNK_DATA


class Op(enum.IntEnum):
    CHALLENGE = 1
    OFFER = 2
    CHUNK = 3
    RESEND = 4
    ERROR = 5


@dataclass(frozen=True)
class Packet:
    op: Op
    session: int
    body: bytes

    def encode(self) -> bytes:
        data = HEADER.pack(self.op, self.session) + self.body
        if len(data) > TUNNEL_MAX:
            raise ValueError(f"TUNNEL payload of {len(data)} bytes exceeds {TUNNEL_MAX}")
        return data


def decode(payload: bytes) -> Packet:
    if len(payload) < HEADER.size:
        raise FormatError("challenge packet", f"{len(payload)} bytes is shorter than the header")
    op_raw, session = HEADER.unpack_from(payload)
    try:
        op = Op(op_raw)
    except ValueError:
        raise FormatError("challenge packet", f"unknown op {op_raw}") from None
    return Packet(op, session, payload[HEADER.size:])


def challenge(session: int, nonce: bytes) -> Packet:
    if not 16 <= len(nonce) <= 64:
        raise ValueError("nonce must be 16 to 64 bytes")
    return Packet(Op.CHALLENGE, session, bytes([len(nonce)]) + nonce)


def parse_challenge(p: Packet) -> bytes:
    if not p.body or not 16 <= p.body[0] <= 64 or len(p.body) < 1 + p.body[0]:
        raise FormatError("challenge", "nonce must be 16 to 64 bytes")
    return p.body[1:1 + p.body[0]]


OFFER = struct.Struct("<IH32s")


def offer(session: int, length: int, chunks: int, digest: bytes) -> Packet:
    return Packet(Op.OFFER, session, OFFER.pack(length, chunks, digest))


def parse_offer(p: Packet) -> tuple[int, int, bytes]:
    if len(p.body) < OFFER.size:
        raise FormatError("offer", "truncated")
    length, chunks, digest = OFFER.unpack_from(p.body)
    if length > MAX_BLOB_BYTES or chunks > MAX_CHUNKS or chunks != (length + CHUNK_DATA - 1) // CHUNK_DATA:
        raise FormatError("offer", f"{length} bytes in {chunks} chunks is inconsistent or over the limit")
    return length, chunks, digest


def chunk(session: int, index: int, data: bytes) -> Packet:
    return Packet(Op.CHUNK, session, struct.pack("<H", index) + data)


def parse_chunk(p: Packet) -> tuple[int, bytes]:
    if len(p.body) < 2:
        raise FormatError("chunk", "truncated")
    return struct.unpack_from("<H", p.body)[0], p.body[2:]


def resend(session: int, indices: list[int]) -> Packet:
    wanted = indices[:MAX_RESEND]
    return Packet(Op.RESEND, session, bytes([len(wanted)]) + b"".join(struct.pack("<H", i) for i in wanted))


def parse_resend(p: Packet) -> list[int]:
    if not p.body or len(p.body) < 1 + 2 * p.body[0] or p.body[0] > MAX_RESEND:
        raise FormatError("resend", "truncated or too long")
    return [struct.unpack_from("<H", p.body, 1 + 2 * i)[0] for i in range(p.body[0])]


def error(session: int, text: str) -> Packet:
    return Packet(Op.ERROR, session, text.encode()[: TUNNEL_MAX - HEADER.size])


def split(blob: bytes) -> list[bytes]:
    return [blob[i:i + CHUNK_DATA] for i in range(0, len(blob), CHUNK_DATA)]
