"""Other parts on the bus: every MAVLink system/component heard, and the FC's DroneCAN nodes.

An unapproved camera, radio or gimbal shows up here because it talks: the link notes the
source of every packet it receives. Each part becomes a ``component`` measurement:

* ``mavlink:SYS/COMP``: claims ``type`` (MAV_TYPE name, or ``radio`` for a SiK radio heard only
  through RADIO_STATUS), ``autopilot``, and, if it answers AUTOPILOT_VERSION within a bounded
  wait, ``vendor_id``/``product_id``, ``hardware_id`` (its uid2 or uid), ``git_hash``, ``version``;
* ``dronecan:BUS/NODE``: each node on the FC's DroneCAN buses, heard through ArduPilot's MAVLink
  CAN forwarding and asked GetNodeInfo (``agent/measure/dronecan.py``); claims ``type`` ``dronecan``,
  ``model`` (the node name), ``vendor`` (the organisation label of a reverse-DNS name:
  ``com.cubepilot.here3`` → ``cubepilot``), ``hardware_id`` (the 16-byte unique id in hex),
  ``hw_version``, ``sw_version``, ``vcs_commit``, and the firmware image CRC as a ``crc64``
  digest. The FC's own node (``CAN_Dn_UC_NODE``) is the FC, not a part, and is left out.

Not measured: the FC itself, the agent itself, and ground stations (MAV_TYPE_GCS), which are not
part of the airframe and come and go (``include_gcs`` measures them too). MAVLink parts carry no
digest: MAVLink does not report a component's firmware hash. DroneCAN nodes report an image CRC,
which names a build but, like everything a part says about itself, is only as honest as the part.
"""

from __future__ import annotations

import time
from typing import Any

from agent.mavlink.dronecan_wire import NodeInfo
from agent.mavlink.ids import MAV_CMD_REQUEST_MESSAGE, MAV_TYPE_GCS, MSG_AUTOPILOT_VERSION
from agent.mavlink.link import HeardComponent, Link
from agent.measure import dronecan
from agent.measure.base import Collector, DroneCanBus, Inventory, MeasureOptions
from agent.measure.firmware import identity_claims
from attest.models import ClaimValue, Kind, Measurement, Strength

MAX_CAN_BUSES = 2  # CAN_P1, CAN_P2 (HAL_NUM_CAN_IFACES on ArduPilot's boards and SITL)
DRONECAN_PROTOCOL = 1  # CAN_Dn_PROTOCOL
RADIO_IDS = (ord("3"), ord("D"))  # SiK radios inject RADIO_STATUS as 51/68


def _mav_type_name(value: int) -> str:
    from pymavlink.dialects.v20 import ardupilotmega as mavlink

    entry = mavlink.enums["MAV_TYPE"].get(value)
    name = entry.name if entry is not None else str(value)
    return name.removeprefix("MAV_TYPE_").lower()


def _dronecan(bus: int, node: int, info: NodeInfo | None, error: str | None) -> Measurement:
    claims: dict[str, ClaimValue] = {"type": "dronecan", "bus": bus, "node_id": node}
    digests: dict[str, str] = {}
    if info is None:
        if error:
            claims["error"] = error[:200]
        return Measurement(f"dronecan:{bus}/{node}", Kind.COMPONENT, {}, "dronecan:NodeStatus", Strength.OBSERVED,
                           claims)
    labels = info.name.split(".")
    claims["model"] = info.name
    if len(labels) >= 3:
        claims["vendor"] = labels[1]
    claims["hardware_id"] = info.unique_id.hex()
    claims["hw_version"] = f"{info.hw_version[0]}.{info.hw_version[1]}"
    claims["sw_version"] = f"{info.sw_version[0]}.{info.sw_version[1]}"
    if info.vcs_commit is not None:
        claims["vcs_commit"] = f"{info.vcs_commit:08x}"
    if info.image_crc is not None:
        digests["crc64"] = f"{info.image_crc:016x}"
    claims["health"] = info.health
    return Measurement(f"dronecan:{bus}/{node}", Kind.COMPONENT, digests, "dronecan:GetNodeInfo",
                       Strength.SELF_REPORTED, claims)


def dronecan_buses(params: dict[str, float] | None) -> list[tuple[int, int | None]]:
    """(bus, the FC's own node id) for each CAN bus whose driver speaks DroneCAN.

    Without the FC's parameters every bus is tried and no node is left out as the FC's own (an
    FC node then shows up as a part the manifest does not approve: fail closed, not silent).
    """
    if params is None:
        return [(bus, None) for bus in range(1, MAX_CAN_BUSES + 1)]
    out = []
    for bus in range(1, MAX_CAN_BUSES + 1):
        driver = int(params.get(f"CAN_P{bus}_DRIVER", 0))
        if driver < 1 or int(params.get(f"CAN_D{driver}_PROTOCOL", 0)) != DRONECAN_PROTOCOL:
            continue
        node = params.get(f"CAN_D{driver}_UC_NODE")
        out.append((bus, int(node) if node is not None else None))
    return out


def collect_dronecan(link: Link, opts: MeasureOptions, inv: Inventory) -> list[Measurement]:
    out: list[Measurement] = []
    for bus, fc_node in dronecan_buses(inv.fc_params):
        result = dronecan.scan(link, bus=bus, local_node=opts.dronecan_node_id, listen=opts.dronecan_listen,
                               reply_timeout=opts.component_reply_timeout)
        if result is None:
            continue
        inv.dronecan.append(DroneCanBus(bus, fc_node, dict(result.uptimes)))
        for node, info in sorted(result.nodes.items()):
            if node != fc_node:
                out.append(_dronecan(bus, node, info, result.errors.get(node)))
    return out


def _mavlink(entry: HeardComponent, version: Any) -> Measurement:
    claims: dict[str, ClaimValue] = {}
    hb = entry.heartbeat
    if hb is not None:
        claims["type"] = _mav_type_name(int(hb.type))
        claims["autopilot"] = int(hb.autopilot)
    elif (entry.system, entry.component) == RADIO_IDS or "RADIO_STATUS" in entry.types:
        claims["type"] = "radio"
    else:
        claims["type"] = "unknown"
        claims["heard"] = ",".join(sorted(entry.types))[:200]
    strength = Strength.OBSERVED
    source = "mavlink:HEARTBEAT" if hb is not None else "mavlink:traffic"
    if version is not None:
        ident = identity_claims(version)
        for key in ("vendor_id", "product_id", "git_hash", "version"):
            claims[key] = ident[key]
        if ident["uid"]:
            claims["hardware_id"] = ident["uid"]
        strength = Strength.SELF_REPORTED
        source = "mavlink:AUTOPILOT_VERSION"
    return Measurement(f"mavlink:{entry.system}/{entry.component}", Kind.COMPONENT, {}, source, strength, claims)


MAX_VERSION_ASKS = 32  # parts asked for AUTOPILOT_VERSION per pass; more are measured from their HEARTBEAT


def collect_components(link: Link, opts: MeasureOptions, inv: Inventory) -> list[Measurement]:
    wait_until = link.opened_at + opts.listen_time
    while (remaining := wait_until - time.monotonic()) > 0:
        link.recv(None, remaining)
    own = (link.config.system_id, link.config.component_id)
    now = time.monotonic()
    parts: list[HeardComponent] = []
    for key, entry in sorted(link.heard.items()):
        if key in (link.fc, own) or now - entry.last_seen > opts.component_gone_s:
            continue  # a sender heard once long ago (one spoofed HEARTBEAT) is not a part on the bus
        hb = entry.heartbeat
        if hb is not None and int(hb.type) == MAV_TYPE_GCS and not opts.include_gcs:
            continue
        parts.append(entry)
    unasked = [p for p in parts if p.autopilot_version is None and p.heartbeat is not None]
    _ask_versions(link, unasked[:MAX_VERSION_ASKS], opts)
    out = [_mavlink(entry, entry.autopilot_version) for entry in parts]
    if opts.dronecan:
        out += collect_dronecan(link, opts, inv)
    return out


def _ask_versions(link: Link, parts: list[HeardComponent], opts: MeasureOptions) -> None:
    """AUTOPILOT_VERSION from every part at once, in one bounded wait.

    Asked one by one, each silent part cost a reply timeout, so anyone on the link could stretch a
    pass by sending HEARTBEATs from made-up ids (issue 11): now a pass waits one timeout however many
    parts there are. The link files each answer under its sender (``HeardComponent.autopilot_version``).
    """
    for p in parts:
        link.send(link.mav.command_long_encode(p.system, p.component, MAV_CMD_REQUEST_MESSAGE, 0,
                                               float(MSG_AUTOPILOT_VERSION), 0, 0, 0, 0, 0, 0))
    deadline = time.monotonic() + opts.component_reply_timeout
    while any(p.autopilot_version is None for p in parts) and (left := deadline - time.monotonic()) > 0:
        link.recv(None, left)


COLLECTOR = Collector("components", "fc.components", lambda p: collect_components(p.link, p.opts, p.inv))
