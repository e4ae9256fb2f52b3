"""A virtual ArduPilot flight controller for CI, behaving as real ArduCopter SITL was recorded to.

Start it as a context manager and connect the agent to it like to SITL's SERIAL1::

    with VirtualFC(VfcConfig(scripts={"hello.lua": b"..."})) as fc:
        link = Link.open(LinkConfig(fc.url(1)))

Plug an arming-check provider (the Lua gate) in through :mod:`sim.vfc.hooks`.
"""

from sim.vfc.config import BusComponent, DroneCanNode, FirmwareInfo, VfcConfig
from sim.vfc.hooks import AllowArming, ArmingAuthority, DenyArming, VehicleBus
from sim.vfc.server import VirtualFC

__all__ = ["AllowArming", "ArmingAuthority", "BusComponent", "DenyArming", "DroneCanNode", "FirmwareInfo",
           "VehicleBus", "VfcConfig", "VirtualFC"]
