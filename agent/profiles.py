"""FC profiles: everything that differs between ArduPilot and PX4, chosen from what the FC says it is.

The flow (measure → appraise → seal → deliver → watch) is the same for every FC; what differs is
*what* is measured, *which* parameters are volatile, and *how* arming is refused:

* **ArduPilot**: the Lua gate (``agent/gate/``, ADR 0005/0013) holds the verdict on the FC; the
  collectors read ``@PARAM/param.pck``, ``@SYS/flash.bin``, the Lua scripts and DroneCAN.
* **PX4**: PX4 has no Lua, but it asks an external authorizer before arming when
  ``COM_ARM_AUTH_REQ=1`` (MAV_CMD_ARM_AUTHORIZATION_REQUEST, ADR 0024); the agent *is* that
  authorizer (``agent/gate/px4.py``). The collectors are PX4's (``agent/measure/px4.py``).

The profile is chosen from the FC's HEARTBEAT ``autopilot`` field (MAV_AUTOPILOT_ARDUPILOTMEGA,
MAV_AUTOPILOT_PX4); anything else is refused by name rather than measured with the wrong rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.mavlink.ids import MAV_AUTOPILOT_ARDUPILOTMEGA, MAV_AUTOPILOT_PX4
from agent.measure import collect, px4
from agent.measure.base import Collector
from attest import params as paramdigest
from attest.errors import FlightSealError

GATE_LUA = "lua-gate"
GATE_ARM_AUTHORIZATION = "arm-authorization"


class UnsupportedFc(FlightSealError):
    """The FC's autopilot is neither ArduPilot nor PX4."""


@dataclass(frozen=True)
class FcProfile:
    """One kind of FC: its name (``ardupilot``/``px4``), the HEARTBEAT ``autopilot`` value that
    announces it, its collectors in pass order, the parameters it changes by itself (left out of
    the digest unless a manifest says otherwise), and how the agent refuses arming on it."""

    name: str
    autopilot: int
    collectors: tuple[Collector, ...]
    param_exclusions: tuple[str, ...]
    gate: str
    # challenge packets sent per watch-loop turn (~50 ms): PX4 forwards the companion's TUNNELs to the
    # GCS through a small buffer, and bursts of 8 lost a third of them on SITL (2 lost none in 3 runs)
    challenge_burst: int = 8

    @property
    def label(self) -> str:
        return {"ardupilot": "ArduPilot", "px4": "PX4"}.get(self.name, self.name)


ARDUPILOT = FcProfile("ardupilot", MAV_AUTOPILOT_ARDUPILOTMEGA, collect.COLLECTORS, paramdigest.DEFAULT_EXCLUSIONS,
                      GATE_LUA)
PX4 = FcProfile("px4", MAV_AUTOPILOT_PX4, collect.PX4_COLLECTORS, px4.VOLATILE_PARAMS, GATE_ARM_AUTHORIZATION,
                challenge_burst=2)
PROFILES: tuple[FcProfile, ...] = (ARDUPILOT, PX4)


def by_name(name: str) -> FcProfile:
    """The profile called ``name``.

    Raises:
        UnsupportedFc: no profile has that name.
    """
    for profile in PROFILES:
        if profile.name == name:
            return profile
    raise UnsupportedFc(f"no FC profile {name!r}: use one of {', '.join(p.name for p in PROFILES)}")


def for_heartbeat(hb: Any) -> FcProfile:
    """The profile of the FC whose HEARTBEAT is ``hb``.

    Raises:
        UnsupportedFc: the FC announces another autopilot (or sent no heartbeat).
    """
    if hb is None:
        raise UnsupportedFc("the FC sent no HEARTBEAT: its autopilot (ArduPilot or PX4) is unknown")
    autopilot = int(hb.autopilot)
    for profile in PROFILES:
        if profile.autopilot == autopilot:
            return profile
    raise UnsupportedFc(f"the FC announces MAV_AUTOPILOT {autopilot}; FlightSeal knows ArduPilot "
                        f"({MAV_AUTOPILOT_ARDUPILOTMEGA}) and PX4 ({MAV_AUTOPILOT_PX4}) only")
