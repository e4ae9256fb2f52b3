"""Ask the FC's DroneCAN nodes who they are, through ArduPilot's MAVLink CAN forwarding.

One scan: MAV_CMD_CAN_FORWARD (bus N) makes the FC copy every frame of that bus to us as
CAN_FRAME; we listen for NodeStatus broadcasts (every node sends one at least once a second),
send each node a GetNodeInfo request as a CAN_FRAME from our own node id, reassemble its
answer, and stop the forwarding (MAV_CMD_CAN_FORWARD 0) so the link is not kept busy.
Every wait is bounded; a node that does not answer is reported as heard-but-silent.

An FC without that CAN bus refuses the command (``None``: nothing to measure there). ArduPilot
stops forwarding by itself 5 s after the last MAV_CMD_CAN_FORWARD, so a scan re-sends it when
it runs long.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.mavlink.dronecan_wire import (
    EFF_FLAG,
    GET_NODE_INFO_ID,
    GET_NODE_INFO_SIGNATURE,
    NODE_STATUS_ID,
    CanId,
    DroneCanError,
    NodeInfo,
    Reassembly,
    Tail,
    decode_node_info,
    get_node_info_request,
)
from agent.mavlink.ids import MAV_CMD_CAN_FORWARD, MAV_RESULT_ACCEPTED
from agent.mavlink.link import Link

CMD_CAN_FORWARD = MAV_CMD_CAN_FORWARD
CAN_FILTER_REPLACE = 0
CAN_FILTER_MAX_IDS = 16
FORWARD_REFRESH_S = 2.0  # well inside ArduPilot's 5 s forwarding timeout
MAX_NODES = 127
FRAME_TYPES = ["CAN_FRAME", "CANFD_FRAME"]  # a node on a CAN FD bus answers in FD frames, forwarded as CANFD_FRAME


@dataclass
class DroneCanScan:
    """The nodes heard on one bus, with what each said in GetNodeInfo (None: did not answer)."""

    bus: int
    nodes: dict[int, NodeInfo | None] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # node → why its answer was unusable
    uptimes: dict[int, int] = field(default_factory=dict)  # node → NodeStatus uptime (s), for the watch


class _Forwarding:
    """Receives forwarded frames for one scan and keeps the FC forwarding while it runs."""

    def __init__(self, link: Link, bus: int) -> None:
        self.link, self.bus = link, bus
        self.refreshed = time.monotonic()

    def start(self, timeout: float, type_ids: list[int]) -> bool:
        ack = self.link.command_long(CMD_CAN_FORWARD, [float(self.bus)], timeout=timeout, retries=2)
        self.refreshed = time.monotonic()
        if ack is None or int(ack.result) != MAV_RESULT_ACCEPTED:
            return False
        self._filter(type_ids)
        return True

    def stop(self, timeout: float) -> None:
        self._filter([])
        self.link.command_long(CMD_CAN_FORWARD, [0.0], timeout=timeout, retries=1)

    def _filter(self, type_ids: list[int]) -> None:
        """Forward only these data types (ArduPilot's filter; unacknowledged, so best effort).

        The FC's own bus traffic (ESC and servo commands, its GNSS and status messages: about
        40 frames/s in SITL, far more on a real airframe) would otherwise flood the link.
        An empty list clears the filter, so a ground station forwarding later sees everything.
        """
        fc = self.link.fc
        ids = (type_ids + [0] * CAN_FILTER_MAX_IDS)[:CAN_FILTER_MAX_IDS]
        self.link.send(self.link.mav.can_filter_modify_encode(fc[0], fc[1], self.bus, CAN_FILTER_REPLACE,
                                                              len(type_ids), ids))

    def frame(self, timeout: float) -> tuple[CanId, bytes, bool] | None:
        """The next forwarded 29-bit frame of our bus (id, data, is CAN FD), or None when ``timeout`` runs out."""
        if time.monotonic() - self.refreshed > FORWARD_REFRESH_S:
            fc = self.link.fc
            self.link.send(self.link.mav.command_long_encode(fc[0], fc[1], CMD_CAN_FORWARD, 0, float(self.bus),
                                                             0, 0, 0, 0, 0, 0))
            self.refreshed = time.monotonic()
        msg = self.link.recv(FRAME_TYPES, timeout, self._ours)
        if msg is None:
            return None
        return CanId.parse(int(msg.id)), bytes(msg.data[:int(msg.len)]), msg.get_type() == "CANFD_FRAME"

    def frames(self, timeout: float) -> Iterator[tuple[CanId, bytes, bool]]:
        """Forwarded frames until ``timeout`` runs out (the caller may stop early)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            got = self.frame(remaining)
            if got is not None:
                yield got

    def _ours(self, msg: Any) -> bool:
        most = 64 if msg.get_type() == "CANFD_FRAME" else 8
        return (msg.get_srcSystem(), msg.get_srcComponent()) == self.link.fc and int(msg.bus) == self.bus - 1 \
            and bool(int(msg.id) & EFF_FLAG) and 0 < int(msg.len) <= most

    def send(self, can_id: int, data: bytes) -> None:
        fc = self.link.fc
        self.link.send(self.link.mav.can_frame_encode(fc[0], fc[1], self.bus - 1, len(data), can_id | EFF_FLAG,
                                                      list(data.ljust(8, b"\0"))))


def scan(link: Link, *, bus: int = 1, local_node: int = 127, listen: float = 1.2, reply_timeout: float = 0.5,
         retries: int = 2) -> DroneCanScan | None:
    """Nodes on DroneCAN bus ``bus`` (1-based, as CAN_Pn) and their GetNodeInfo; None if the FC has no such bus."""
    fwd = _Forwarding(link, bus)
    if not fwd.start(reply_timeout, [GET_NODE_INFO_ID, NODE_STATUS_ID]):
        return None
    result = DroneCanScan(bus)
    try:
        _listen(fwd, result, local_node, listen)
        transfer_id = 0
        for node in sorted(result.nodes):
            for _ in range(max(1, retries)):
                transfer_id = (transfer_id + 1) & 0x1F
                try:
                    info = _ask(fwd, node, local_node, transfer_id, reply_timeout)
                except DroneCanError as exc:
                    result.errors[node] = str(exc)
                    continue
                if info is not None:
                    result.nodes[node] = info
                    result.errors.pop(node, None)
                    break
    finally:
        fwd.stop(reply_timeout)
    return result


def node_statuses(link: Link, *, bus: int = 1, local_node: int = 127, listen: float = 1.2,
                  timeout: float = 0.5) -> dict[int, int] | None:
    """Node → uptime from one round of NodeStatus broadcasts (no questions asked); None: no such bus.

    The daemon's watch between passes: a node that appears or disappears, or whose uptime went
    back (it restarted: re-flashed, swapped, power-cycled), calls for a new pass.
    """
    fwd = _Forwarding(link, bus)
    if not fwd.start(timeout, [NODE_STATUS_ID]):
        return None
    result = DroneCanScan(bus)
    try:
        _listen(fwd, result, local_node, listen)
    finally:
        fwd.stop(timeout)
    return result.uptimes


def _listen(fwd: _Forwarding, result: DroneCanScan, local_node: int, listen: float) -> None:
    for cid, data, _ in fwd.frames(listen):
        if not cid.service and cid.type_id == NODE_STATUS_ID and cid.source not in (0, local_node) \
                and len(result.nodes) < MAX_NODES:
            result.nodes.setdefault(cid.source, None)
            if len(data) == 8 and data[-1] & 0xC0 == 0xC0:  # NodeStatus: 7 bytes, one frame
                result.uptimes[cid.source] = int.from_bytes(data[:4], "little")


def _ask(fwd: _Forwarding, node: int, local_node: int, transfer_id: int, timeout: float) -> NodeInfo | None:
    fwd.send(*get_node_info_request(local_node, node, transfer_id))
    reassembly = Reassembly(GET_NODE_INFO_SIGNATURE)
    fd = False
    for cid, data, frame_fd in fwd.frames(timeout):
        if not (cid.service and not cid.request and cid.type_id == GET_NODE_INFO_ID and cid.source == node
                and cid.destination == local_node):
            continue
        fd = (fd and not Tail.parse(data[-1]).start) or frame_fd
        payload = reassembly.feed(data)
        if payload is not None:
            return decode_node_info(node, payload, fd)
    return None
