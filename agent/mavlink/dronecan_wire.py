"""DroneCAN (UAVCAN v0) on the wire: just enough to ask a node who it is.

ArduPilot does not report its DroneCAN nodes over MAVLink (it has no UAVCAN_NODE_INFO and
answers MAV_CMD_UAVCAN_GET_NODE_INFO with UNSUPPORTED), but it forwards raw CAN frames to a
MAVLink client that asks with MAV_CMD_CAN_FORWARD, and puts the client's CAN_FRAMEs on the bus.
Through that, the agent hears every node's NodeStatus broadcast and asks each one
``uavcan.protocol.GetNodeInfo``, whose answer carries what a supply-chain check needs: the
node's name, its 16-byte unique id, its software version, VCS commit and firmware image CRC.

This module is pure: CAN identifiers, tail bytes, multi-frame reassembly with the transfer CRC,
and the two GetNodeInfo encodings. Spec: https://dronecan.github.io/Specification/4._CAN_bus_transport_layer/
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

EFF_FLAG = 0x8000_0000  # ArduPilot's CANFrame marks 29-bit (extended) identifiers with bit 31
ID_MASK = 0x1FFF_FFFF
NODE_STATUS_ID = 341
GET_NODE_INFO_ID = 1
GET_NODE_INFO_SIGNATURE = 0xEE468A8121C46A9E
FRAME_PAYLOAD = 7  # a classic CAN frame carries 8 bytes: 7 of payload and the tail byte (CAN FD: up to 63)
MAX_TRANSFER = 7 + 15 + 2 + 16 + 1 + 255 + 80 + 2 + 64  # largest GetNodeInfo response, CRC, CAN FD padding


class DroneCanError(ValueError):
    """A frame or transfer that does not follow the DroneCAN transport rules."""


@dataclass(frozen=True)
class CanId:
    """The fields of a DroneCAN 29-bit identifier."""

    priority: int
    source: int
    service: bool
    type_id: int  # message type id, or service type id for a service frame
    request: bool = False
    destination: int = 0

    @classmethod
    def parse(cls, can_id: int) -> CanId:
        can_id &= ID_MASK
        priority, source = can_id >> 24, can_id & 0x7F
        if can_id & 0x80:
            return cls(priority, source, True, (can_id >> 16) & 0xFF, bool(can_id & 0x8000), (can_id >> 8) & 0x7F)
        type_id = (can_id >> 8) & 0xFFFF if source else (can_id >> 8) & 0x3  # anonymous: 2-bit type id
        return cls(priority, source, False, type_id)

    def encode(self) -> int:
        if self.service:
            return (self.priority << 24 | self.type_id << 16 | int(self.request) << 15 | self.destination << 8
                    | 0x80 | self.source)
        return self.priority << 24 | self.type_id << 8 | self.source


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16-CCITT-FALSE, the transfer CRC of multi-frame transfers."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def transfer_crc(signature: int, payload: bytes) -> int:
    return crc16(payload, crc16(signature.to_bytes(8, "little")))


@dataclass(frozen=True)
class Tail:
    start: bool
    end: bool
    toggle: bool
    transfer_id: int

    @classmethod
    def parse(cls, byte: int) -> Tail:
        return cls(bool(byte & 0x80), bool(byte & 0x40), bool(byte & 0x20), byte & 0x1F)


def single_frame(payload: bytes, transfer_id: int) -> bytes:
    """The data of a one-frame transfer (payload of at most 7 bytes, no CRC)."""
    if len(payload) > FRAME_PAYLOAD:
        raise DroneCanError(f"{len(payload)} bytes need a multi-frame transfer")
    return payload + bytes([0xC0 | (transfer_id & 0x1F)])


def get_node_info_request(source: int, destination: int, transfer_id: int, priority: int = 30) -> tuple[int, bytes]:
    """(29-bit id, frame data) of a GetNodeInfo request: the request has no fields."""
    for name, node in (("source", source), ("destination", destination)):
        if not 1 <= node <= 127:
            raise DroneCanError(f"{name} node id {node} is not in 1..127")
    can_id = CanId(priority, source, True, GET_NODE_INFO_ID, True, destination).encode()
    return can_id, single_frame(b"", transfer_id)


@dataclass
class Reassembly:
    """One multi-frame transfer being put back together (one per source, type and transfer id).

    Frames must come in order with alternating toggle bits; the first carries the transfer CRC.
    Anything else ends the transfer with :class:`DroneCanError` (the caller asks again).
    """

    signature: int
    max_bytes: int = MAX_TRANSFER
    transfer_id: int | None = None
    data: bytearray = field(default_factory=bytearray)
    toggle: bool = False

    def feed(self, frame: bytes) -> bytes | None:
        """Add one frame; return the payload when the transfer is complete."""
        if not frame:
            raise DroneCanError("empty CAN frame (no tail byte)")
        tail = Tail.parse(frame[-1])
        body = frame[:-1]
        if tail.start:
            if tail.toggle:
                raise DroneCanError("first frame of a transfer has its toggle bit set")
            self.transfer_id, self.data, self.toggle = tail.transfer_id, bytearray(), False
        elif self.transfer_id is None:
            raise DroneCanError("frame in the middle of a transfer whose start was not seen")
        elif tail.transfer_id != self.transfer_id or tail.toggle == self.toggle:
            self.transfer_id = None
            raise DroneCanError("frame out of order (transfer id or toggle bit wrong)")
        self.toggle = tail.toggle
        self.data += body
        if len(self.data) > self.max_bytes:
            self.transfer_id = None
            raise DroneCanError(f"transfer longer than {self.max_bytes} bytes")
        if not tail.end:
            return None
        self.transfer_id = None
        if tail.start:
            return bytes(self.data)  # single frame: no CRC
        if len(self.data) < 2:
            raise DroneCanError("multi-frame transfer shorter than its CRC")
        want, payload = int.from_bytes(self.data[:2], "little"), bytes(self.data[2:])
        if transfer_crc(self.signature, payload) != want:
            raise DroneCanError("transfer CRC does not match (corrupted or mixed frames)")
        return payload


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself in its GetNodeInfo response."""

    node_id: int
    uptime_s: int
    health: int
    mode: int
    sw_version: tuple[int, int]
    vcs_commit: int | None  # present only if the node sets the flag
    image_crc: int | None  # CRC-64-WE of the firmware image, if the node sets the flag
    hw_version: tuple[int, int]
    unique_id: bytes
    certificate: bytes
    name: str


def decode_node_info(node_id: int, payload: bytes, fd: bool = False) -> NodeInfo:
    """Decode a ``uavcan.protocol.GetNodeInfo`` response.

    Every field up to the name is byte-aligned. The name is the last field: on classic CAN it
    takes the rest of the payload (tail array optimisation); in a CAN FD transfer that
    optimisation is off, so it has a 7-bit length first, and every byte after it straddles two.
    """
    fixed = 7 + 15 + 2 + 16 + 1
    if len(payload) < fixed:
        raise DroneCanError(f"GetNodeInfo response from node {node_id} is {len(payload)} bytes, "
                            f"shorter than its {fixed} fixed bytes")
    uptime, bits, _vendor = struct.unpack_from("<IBH", payload, 0)
    sw_major, sw_minor, flags, vcs, crc = struct.unpack_from("<BBBIQ", payload, 7)
    hw_major, hw_minor = payload[22], payload[23]
    unique_id = payload[24:40]
    cert_len = payload[40]
    if len(payload) < fixed + cert_len:
        raise DroneCanError(f"GetNodeInfo response from node {node_id}: certificate runs past the end")
    certificate = payload[41:41 + cert_len]
    raw_name = _fd_name(node_id, payload[41 + cert_len:]) if fd else payload[41 + cert_len:]
    if len(raw_name) > 80:
        raise DroneCanError(f"GetNodeInfo response from node {node_id}: name longer than 80 bytes")
    return NodeInfo(node_id=node_id, uptime_s=uptime, health=bits >> 6, mode=(bits >> 3) & 0x7,
                    sw_version=(sw_major, sw_minor), vcs_commit=vcs if flags & 1 else None,
                    image_crc=crc if flags & 2 else None, hw_version=(hw_major, hw_minor),
                    unique_id=bytes(unique_id), certificate=bytes(certificate),
                    name=raw_name.decode("ascii", "replace"))


def _fd_name(node_id: int, rest: bytes) -> bytes:
    """A DSDL ``uint8[<=80]`` with its 7-bit length prefix, bits packed most significant first."""
    total = len(rest) * 8
    if total < 7:
        raise DroneCanError(f"GetNodeInfo response from node {node_id}: name length missing")
    bits = int.from_bytes(rest, "big")
    length = bits >> (total - 7)
    if length > 80 or 7 + 8 * length > total:
        raise DroneCanError(f"GetNodeInfo response from node {node_id}: name of {length} bytes does not fit")
    return bytes((bits >> (total - 7 - 8 * (i + 1))) & 0xFF for i in range(length))
