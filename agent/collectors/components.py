"""Other parts on the bus: every MAVLink system/component heard, and the FC's DroneCAN nodes.

An unapproved camera, radio or gimbal shows up here because it talks: the link notes the
source of every packet it receives. Each part becomes a ``component`` measurement:

* ``mavlink:SYS/COMP``: claims ``type`` (MAV_TYPE name, or ``radio`` for a SiK radio heard only
  through RADIO_STATUS), ``autopilot``, and, if it answers AUTOPILOT_VERSION within a bounded
  wait, ``vendor_id``/``product_id``, ``hardware_id`` (its uid2 or uid), ``git_hash``, ``version``;
* ``dronecan:NODE``: UAVCAN_NODE_STATUS / UAVCAN_NODE_INFO sent by the FC with the node id as
  component id; claims ``type`` ``dronecan``, ``model`` (the node name), ``vendor`` (the
  organisation label of a reverse-DNS name: ``com.cubepilot.here3`` → ``cubepilot``),
  ``hardware_id`` (the 16-byte unique id in hex), ``sw_version``, ``vcs_commit``.

Not measured: the FC itself, the agent itself, and ground stations (MAV_TYPE_GCS), which are not
part of the airframe and come and go (``include_gcs`` measures them too). No digest: MAVLink
does not carry a component's firmware hash (DroneCAN's image CRC is not in UAVCAN_NODE_INFO).
"""

from __future__ import annotations

import time
from typing import Any

from agent.collectors.base import MeasureOptions
from agent.collectors.firmware import identity_claims
from agent.link import HeardComponent, Link
from attest.models import ClaimValue, Kind, Measurement, Strength

MAV_TYPE_GCS = 6
CMD_UAVCAN_GET_NODE_INFO = 5200
RADIO_IDS = (ord("3"), ord("D"))  # SiK radios inject RADIO_STATUS as 51/68


def _mav_type_name(value: int) -> str:
    from pymavlink.dialects.v20 import ardupilotmega as mavlink

    entry = mavlink.enums["MAV_TYPE"].get(value)
    name = entry.name if entry is not None else str(value)
    return name.removeprefix("MAV_TYPE_").lower()


def _dronecan(entry: HeardComponent) -> Measurement:
    claims: dict[str, ClaimValue] = {"type": "dronecan", "node_id": entry.component}
    strength = Strength.OBSERVED
    info = entry.node_info
    if info is not None:
        name = bytes(info.name).split(b"\0", 1)[0].decode("ascii", "replace") if not isinstance(info.name, str) \
            else info.name
        labels = name.split(".")
        claims["model"] = name
        if len(labels) >= 3:
            claims["vendor"] = labels[1]
        claims["hardware_id"] = bytes(info.hw_unique_id).hex()
        claims["hw_version"] = f"{info.hw_version_major}.{info.hw_version_minor}"
        claims["sw_version"] = f"{info.sw_version_major}.{info.sw_version_minor}"
        claims["vcs_commit"] = f"{int(info.sw_vcs_commit):08x}"
        strength = Strength.SELF_REPORTED
    if entry.node_status is not None:
        claims["health"] = int(entry.node_status.health)
    return Measurement(f"dronecan:{entry.component}", Kind.COMPONENT, {}, "mavlink:UAVCAN_NODE_INFO"
                       if info is not None else "mavlink:UAVCAN_NODE_STATUS", strength, claims)


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


def collect_components(link: Link, opts: MeasureOptions) -> list[Measurement]:
    wait_until = link.opened_at + opts.listen_time
    while (remaining := wait_until - time.monotonic()) > 0:
        link.recv(None, remaining)
    fc_sys = link.fc[0]
    own = (link.config.system_id, link.config.component_id)
    nodes = [e for e in link.heard.values() if e.system == fc_sys and e.node_status is not None]
    if nodes:
        ack = link.command_long(CMD_UAVCAN_GET_NODE_INFO, timeout=opts.component_reply_timeout, retries=1)
        if ack is not None and ack.result == 0:
            end = time.monotonic() + opts.component_reply_timeout
            while (remaining := end - time.monotonic()) > 0 and any(n.node_info is None for n in nodes):
                link.recv(["UAVCAN_NODE_INFO"], remaining)
    out: list[Measurement] = []
    for key, entry in sorted(link.heard.items()):
        if key in (link.fc, own):
            continue
        if entry.node_status is not None or entry.node_info is not None:
            out.append(_dronecan(entry))
            continue
        hb = entry.heartbeat
        if hb is not None and int(hb.type) == MAV_TYPE_GCS and not opts.include_gcs:
            continue
        version = entry.autopilot_version
        if version is None and hb is not None:
            version = link.request_message(148, "AUTOPILOT_VERSION", target=key,
                                           timeout=opts.component_reply_timeout, retries=1)
        out.append(_mavlink(entry, version))
    return out
