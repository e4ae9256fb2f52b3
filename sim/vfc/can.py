"""The virtual FC's DroneCAN bus, and ArduPilot's MAVLink CAN forwarding in front of it.

Nodes are serialised with the ``dronecan`` package (pydronecan, ArduPilot's own Python DroneCAN
stack), not with the agent's decoder, so a test proves the agent reads what a real DroneCAN
stack writes. Forwarding follows ``AP_MAVLinkCAN`` (ArduPilot 4.7):

* MAV_CMD_CAN_FORWARD param1 = bus + 1 (1-based) starts forwarding that bus to the asking channel
  and client; 0 stops it; a bus the FC does not have is refused (MAV_RESULT_FAILED);
* every frame on the bus is sent as CAN_FRAME with ``bus`` 0-based and ``id`` carrying the
  extended-frame flag (bit 31), addressed to the client that asked;
* forwarding stops by itself once 5 s pass without a new MAV_CMD_CAN_FORWARD (ArduPilot checks
  every 100 frames; we check on every frame, which is stricter);
* CAN_FRAMEs from MAVLink are put on the bus (``bus`` 0-based): the nodes hear and answer them.

The FC is a node too (``CAN_D1_UC_NODE``, 10 by default, named ``org.ardupilot:0``) and
broadcasts NodeStatus like every other node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import dronecan
from dronecan import transport

from sim.vfc.config import DroneCanNode

EFF_FLAG = 0x8000_0000
FORWARD_TIMEOUT_S = 5.0
PRIORITY_LOW = 30


@dataclass(frozen=True)
class Frame:
    bus: int  # 0-based, as in CAN_FRAME
    can_id: int  # 29-bit identifier, without the extended flag
    data: bytes
    fd: bool = False  # a CAN FD frame: forwarded as CANFD_FRAME


def _frames(transfer: Any, bus: int) -> list[Frame]:
    return [Frame(bus, f.message_id, bytes(f.bytes), bool(f.canfd)) for f in transfer.to_frames()]


class CanBus:
    """One DroneCAN bus: the FC's node plus the configured nodes (a test may add or replace nodes while it runs)."""

    def __init__(self, nodes: tuple[DroneCanNode, ...], fc_node: int, bus: int = 0) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.fc_node, self.bus = fc_node, bus
        self._transfer_ids: dict[int, int] = {}
        self._boot = time.monotonic()
        self._node_boot: dict[int, float] = {}  # nodes put on the bus later start their uptime then

    def put(self, node: DroneCanNode) -> None:
        """Plug a node in, or replace one (re-flashed, swapped): its uptime starts again at 0."""
        self._node_boot[node.node_id] = time.monotonic()
        self.nodes[node.node_id] = node

    def remove(self, node_id: int) -> None:
        self.nodes.pop(node_id, None)

    def _uptime(self, node_id: int, now: float) -> int:
        return int(now - self._node_boot.get(node_id, self._boot))

    def _next_tid(self, node: int) -> int:
        tid = self._transfer_ids.get(node, 0)
        self._transfer_ids[node] = (tid + 1) & 0x1F
        return tid

    def node_status(self, now: float) -> list[Frame]:
        """One NodeStatus broadcast from every node, the FC's first (each node sends one a second)."""
        out: list[Frame] = []
        for node_id, health in [(self.fc_node, 0), *[(n.node_id, n.health) for n in list(self.nodes.values())]]:
            status = dronecan.uavcan.protocol.NodeStatus(uptime_sec=self._uptime(node_id, now), health=health,
                                                         mode=0)
            out += _frames(transport.Transfer(transfer_id=self._next_tid(node_id), source_node_id=node_id,
                                              payload=status, transfer_priority=PRIORITY_LOW), self.bus)
        return out

    def receive(self, frame: Frame) -> list[Frame]:
        """A frame put on the bus from MAVLink: the frames the nodes answer with."""
        t = transport.Transfer()
        try:
            t.from_frames([transport.Frame(frame.can_id, frame.data)])
        except Exception:  # pydronecan raises many types; a bus ignores a frame it cannot read
            return []
        if not (t.service_not_message and t.request_not_response and t.data_type_id == 1):
            return []
        node = self.nodes.get(t.dest_node_id)
        if node is None or not node.answers:
            return []
        return _frames(transport.Transfer(transfer_id=t.transfer_id, source_node_id=node.node_id,
                                          dest_node_id=t.source_node_id, payload=self._node_info(node),
                                          transfer_priority=PRIORITY_LOW, service_not_message=True,
                                          request_not_response=False, canfd=node.canfd), self.bus)

    def _node_info(self, node: DroneCanNode) -> Any:
        r = dronecan.uavcan.protocol.GetNodeInfo.Response()
        r.status.uptime_sec = self._uptime(node.node_id, time.monotonic())
        r.status.health = node.health
        r.software_version.major, r.software_version.minor = node.sw_version
        flags = (1 if node.vcs_commit is not None else 0) | (2 if node.image_crc is not None else 0)
        r.software_version.optional_field_flags = flags
        r.software_version.vcs_commit = node.vcs_commit or 0
        r.software_version.image_crc = node.image_crc or 0
        r.hardware_version.major, r.hardware_version.minor = node.hw_version
        r.hardware_version.unique_id = list(node.hw_unique_id[:16].ljust(16, b"\0"))
        r.name = node.name
        return r


class Forwarding:
    """AP_MAVLinkCAN's forwarding state: which channel and client get the bus, until when."""

    def __init__(self, buses: int) -> None:
        self.buses = buses
        self.channel: Any = None
        self.client: tuple[int, int] = (0, 0)
        self.bus = -1
        self.last_enable = 0.0
        self.filter_ids: set[int] | None = None  # CAN_FILTER_MODIFY: data type ids that pass, None: all

    def modify_filter(self, bus_1based: int, operation: int, ids: list[int]) -> None:
        """CAN_FILTER_MODIFY (bus 1-based here, unlike CAN_FRAME); 0 replace, 1 add, 2 remove."""
        if not 0 <= bus_1based - 1 < self.buses:
            return
        current = self.filter_ids or set()
        if operation == 0:
            self.filter_ids = set(ids) or None
        elif operation == 1:
            self.filter_ids = current | set(ids)
        elif operation == 2:
            self.filter_ids = (current - set(ids)) or None

    def command(self, channel: Any, client: tuple[int, int], param1: float) -> bool:
        bus = int(param1) - 1
        if bus == -1:
            self.channel, self.bus = None, -1
            return True
        if not 0 <= bus < self.buses:
            return False
        self.channel, self.client, self.bus, self.last_enable = channel, client, bus, time.monotonic()
        return True

    def target(self, frame: Frame) -> tuple[Any, tuple[int, int]] | None:
        if self.channel is None or frame.bus != self.bus:
            return None
        if time.monotonic() - self.last_enable > FORWARD_TIMEOUT_S:
            self.channel, self.bus = None, -1
            return None
        if self.filter_ids is not None and _type_id(frame.can_id) not in self.filter_ids:
            return None
        return self.channel, self.client


def _type_id(can_id: int) -> int:
    """The id AP_MAVLinkCAN filters on: service type, message type, 0 for anonymous frames."""
    if can_id & 0x7F == 0:
        return 0
    return (can_id >> 16) & 0xFF if can_id & 0x80 else (can_id >> 8) & 0xFFFF


def can_frame_message(mavlink: Any, client: tuple[int, int], frame: Frame) -> Any:
    if frame.fd:
        return mavlink.MAVLink_canfd_frame_message(client[0], client[1], frame.bus, len(frame.data),
                                                   frame.can_id | EFF_FLAG, list(frame.data.ljust(64, b"\0")))
    return mavlink.MAVLink_can_frame_message(client[0], client[1], frame.bus, len(frame.data),
                                             frame.can_id | EFF_FLAG, list(frame.data.ljust(8, b"\0")))
