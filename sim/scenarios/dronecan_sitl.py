"""Real SITL with DroneCAN on CAN bus 1, real DroneCAN nodes on its bus, and one measurement pass.

Run it inside a loopback-only network namespace (``sim/launchers/netns.py``): SITL's CAN bus is multicast
UDP, which must not leave the machine. The nodes are pydronecan nodes (ArduPilot's Python
DroneCAN stack) on SITL's multicast bus ``mcast:0``; the agent talks to SITL over MAVLink only,
exactly as on an airframe. Prints the pass's measurements and problems as JSON.

    ip netns exec NS python -m sim.scenarios.dronecan_sitl --node 42:com.acme.gps:1122334455667788
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
from typing import Any

os.environ.setdefault("MAVLINK20", "1")

import dronecan

from agent.mavlink.link import Link, LinkConfig
from agent.measure import MeasureOptions, measure
from agent.measure.dronecan import node_statuses
from sim.launchers.sitl import Sitl, SitlConfig

CAN_PARAMS = {"CAN_P1_DRIVER": 1, "CAN_D1_PROTOCOL": 1}
MCAST_BUS1 = "mcast:0"


def node_info(name: str, image_crc: int, unique_id: bytes) -> Any:
    ni = dronecan.uavcan.protocol.GetNodeInfo.Response()
    ni.name = name
    ni.software_version.major, ni.software_version.minor = 1, 4
    ni.software_version.optional_field_flags = 3  # vcs_commit and image_crc present
    ni.software_version.vcs_commit = 0x1A2B3C4D
    ni.software_version.image_crc = image_crc
    ni.hardware_version.major, ni.hardware_version.minor = 2, 1
    ni.hardware_version.unique_id = list(unique_id)
    return ni


class Nodes:
    """pydronecan nodes spinning in one thread until :meth:`stop`."""

    def __init__(self, specs: list[tuple[int, str, int, bool]]) -> None:
        self.nodes = [dronecan.make_node(MCAST_BUS1, node_id=nid, node_status_interval=1.0,
                                         node_info=node_info(name, crc, bytes([nid]) * 16), send_canfd=fd,
                                         mode=dronecan.uavcan.protocol.NodeStatus().MODE_OPERATIONAL)
                      for nid, name, crc, fd in specs]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="dronecan-nodes", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            for node in self.nodes:
                node.spin(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for node in self.nodes:
            node.close()


def parse_node(text: str) -> tuple[int, str, int, bool]:
    """ID:NAME:IMAGE_CRC_HEX, with :fd for a node that sends CAN FD frames."""
    nid, name, crc, *fd = text.split(":")
    return int(nid), name, int(crc, 16), fd == ["fd"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", action="append", default=[], type=parse_node, help="ID:NAME:IMAGE_CRC_HEX[:fd]")
    args = parser.parse_args(argv)
    with Sitl(SitlConfig(params=CAN_PARAMS)) as sitl:
        nodes = Nodes(args.node)
        try:
            with Link.open(LinkConfig(sitl.url, heartbeat_timeout=30)) as link:
                inv = measure(link, MeasureOptions(flash_read=False))
                statuses = node_statuses(link, bus=1)  # the daemon's watch, right after the pass
        finally:
            nodes.stop()
    json.dump({"measurements": inv.to_json(), "problems": [str(p) for p in inv.problems],
               "timings": inv.timings, "scanned": [dataclasses.asdict(b) for b in inv.dronecan],
               "statuses": statuses}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
