"""Record how PX4 SITL forwards between its links what is addressed to the companion, not to PX4.

Run: ``python -m sim.scenarios.px4_record_forwarding OUT.json`` (needs ``FLIGHTSEAL_PX4_SITL``;
``FLIGHTSEAL_PX4_INSTANCE`` picks the instance, default 4). The companion speaks as PX4's own system
id with component 191 (an onboard computer), as FlightSeal's agent does; the ground station as 255/190.
It sends, in bursts and one by one: TUNNEL packets from the ground station to the companion, TUNNEL
packets back, and a STATUSTEXT from the companion; and counts what arrived on the other link.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("MAVLINK20", "1")

from pymavlink import mavutil

from sim.launchers.px4 import Px4Config, Px4Sitl

PAYLOAD_TYPE = 0xF5E1


def _drain(conn: Any, mtype: str, seconds: float) -> list[Any]:
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        m = conn.recv_match(type=mtype, blocking=True, timeout=0.05)
        if m is not None:
            got.append(m)
    return got


def _tunnels(sender: Any, receiver: Any, target: tuple[int, int], count: int, gap: float) -> dict[str, Any]:
    _drain(receiver, "TUNNEL", 0.2)
    for i in range(count):
        body = bytes([i]) * 100
        sender.mav.tunnel_send(target[0], target[1], PAYLOAD_TYPE, len(body), list(body.ljust(128, b"\0")))
        if gap:
            time.sleep(gap)
    got = _drain(receiver, "TUNNEL", 1.5)
    firsts = sorted({int(m.payload[0]) for m in got if m.payload_type == PAYLOAD_TYPE})
    return {"sent": count, "gap_s": gap, "received": len(firsts), "target": list(target)}


def record(out: str) -> None:
    instance = int(os.environ.get("FLIGHTSEAL_PX4_INSTANCE", "4"))
    with Px4Sitl(Px4Config(instance=instance)) as sitl:
        sysid = sitl.sysid
        companion = mavutil.mavlink_connection(sitl.onboard_url, source_system=sysid, source_component=191)
        companion.wait_heartbeat(timeout=15)
        gcs = mavutil.mavlink_connection(sitl.gcs_url, source_system=255, source_component=190)
        for _ in range(3):  # both sides are heard (PX4 forwards only to a link where the target was seen)
            companion.mav.heartbeat_send(18, 8, 0, 0, 4)
            gcs.mav.heartbeat_send(6, 8, 0, 0, 4)
            time.sleep(0.5)
        gcs.wait_heartbeat(timeout=15)
        result: dict[str, Any] = {"px4": str(sitl.binary), "instance": instance, "px4_system": sysid,
                                  "companion": [sysid, 191], "gcs": [255, 190], "cases": {}}
        cases = result["cases"]
        cases["gcs_to_companion_one_by_one"] = _tunnels(gcs, companion, (sysid, 191), 20, 0.05)
        cases["gcs_to_companion_burst"] = _tunnels(gcs, companion, (sysid, 191), 20, 0.0)
        cases["companion_to_gcs_one_by_one"] = _tunnels(companion, gcs, (255, 190), 20, 0.05)
        cases["companion_to_gcs_burst_of_8_per_50ms"] = _burst(companion, gcs, 40, 8)
        cases["companion_to_gcs_burst_of_2_per_50ms"] = _burst(companion, gcs, 40, 2)
        cases["to_px4_itself_not_forwarded"] = _tunnels(gcs, companion, (sysid, 1), 10, 0.05)
        _drain(gcs, "STATUSTEXT", 0.3)
        companion.mav.statustext_send(4, b"FlightSeal: forwarding probe")
        texts = [str(m.text) for m in _drain(gcs, "STATUSTEXT", 1.0)]
        cases["companion_statustext_reaches_gcs"] = "FlightSeal: forwarding probe" in texts
        companion.close()
        gcs.close()
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


def _burst(sender: Any, receiver: Any, count: int, per_turn: int) -> dict[str, Any]:
    _drain(receiver, "TUNNEL", 0.2)
    for start in range(0, count, per_turn):
        for i in range(start, min(start + per_turn, count)):
            body = bytes([i]) * 121
            sender.mav.tunnel_send(255, 190, PAYLOAD_TYPE, len(body), list(body.ljust(128, b"\0")))
        time.sleep(0.05)
    got = _drain(receiver, "TUNNEL", 1.5)
    firsts = sorted({int(m.payload[0]) for m in got if m.payload_type == PAYLOAD_TYPE})
    return {"sent": count, "per_50ms": per_turn, "received": len(firsts)}


if __name__ == "__main__":
    record(sys.argv[1] if len(sys.argv) > 1 else "forwarding.json")
