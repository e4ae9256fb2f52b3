"""`flightseal gate install` on PX4: make PX4 ask this agent before every arming (ADR 0024).

Nothing is uploaded: PX4's arm authorization is built in. Four parameters turn it on:

* ``COM_ARM_AUTH_REQ`` = 1: arming needs an authorizer's ACCEPTED;
* ``COM_ARM_AUTH_ID`` = the agent's MAVLink system id: whom PX4 asks;
* ``COM_ARM_AUTH_MET`` = 0: ask at every arming (1 would take the answer of an earlier request);
* ``COM_ARM_AUTH_TO`` = 1 s: how long PX4 waits for the answer (PX4's default; the agent never
  answers a request older than that).

They are *pinned* by the agent itself: every pass checks them (``posture.arm_authorization``), and
a pass that finds one changed fails with ``posture-arm-auth-off`` whatever the manifest says. A
manifest can pin them as well (``flightseal manifest pin``) to name the value that changed.

Refuses to change anything while the vehicle is armed; confirms each value by PX4's own answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.gate.px4 import AUTH_TIMEOUT_S
from agent.mavlink.link import Link, heartbeat_armed
from agent.mavlink.paramwire import decode_bytewise, encode_bytewise
from attest.errors import FlightSealError

PARAM_TIMEOUT_S = 2.0
ATTEMPTS = 3


class Px4GateError(FlightSealError):
    """PX4's arm authorization could not be set up or confirmed."""


@dataclass(frozen=True)
class Px4GateReport:
    """What `gate install` set on PX4: name → value (as PX4 confirmed it)."""

    params: dict[str, float]
    changed: tuple[str, ...]


def auth_params(agent_system_id: int) -> dict[str, float]:
    """The values that make PX4 ask the agent with system id ``agent_system_id`` at every arming."""
    return {"COM_ARM_AUTH_REQ": 1, "COM_ARM_AUTH_ID": agent_system_id, "COM_ARM_AUTH_MET": 0,
            "COM_ARM_AUTH_TO": AUTH_TIMEOUT_S}


def _answers(link: Link, msg: Any, name: str) -> bool:
    return (msg.get_srcSystem(), msg.get_srcComponent()) == link.fc and str(msg.param_id).rstrip("\x00") == name


def _read(link: Link, name: str) -> Any:
    for _ in range(ATTEMPTS):
        link.send(link.mav.param_request_read_encode(link.fc[0], link.fc[1], name.encode(), -1))
        msg = link.recv(["PARAM_VALUE"], PARAM_TIMEOUT_S, lambda m: _answers(link, m, name))
        if msg is not None:
            return msg
    raise Px4GateError(f"PX4 did not answer a read of {name} ({ATTEMPTS} tries of {PARAM_TIMEOUT_S:.0f} s): is "
                       "this PX4 v1.10 or later, with arm authorization built in?")


def _set(link: Link, name: str, value: float, param_type: int) -> float:
    wire = encode_bytewise(value, param_type)
    for _ in range(ATTEMPTS):
        link.send(link.mav.param_set_encode(link.fc[0], link.fc[1], name.encode(), wire, param_type))
        msg = link.recv(["PARAM_VALUE"], PARAM_TIMEOUT_S, lambda m: _answers(link, m, name))
        if msg is not None:
            return decode_bytewise(float(msg.param_value), int(msg.param_type))
    raise Px4GateError(f"PX4 did not confirm {name}={value:g} ({ATTEMPTS} tries)")


def install_px4_gate(link: Link, agent_system_id: int, say: Callable[[str], None] = lambda _: None,
                     settle_s: float = 0.5) -> Px4GateReport:
    """Set PX4's arm authorization to ask ``agent_system_id``, and confirm every value.

    Raises:
        Px4GateError: the vehicle is armed, or PX4 did not take or confirm a value.
    """
    if heartbeat_armed(link.fc_heartbeat):
        raise Px4GateError("the vehicle is armed: disarm before `flightseal gate install` (it changes arming "
                           "parameters)")
    wanted = auth_params(agent_system_id)
    confirmed: dict[str, float] = {}
    changed: list[str] = []
    for name, value in wanted.items():
        current = _read(link, name)
        ptype = int(current.param_type)
        now = decode_bytewise(float(current.param_value), ptype)
        if now != value:
            now = _set(link, name, value, ptype)
            changed.append(name)
        if now != value:
            raise Px4GateError(f"PX4 kept {name}={now:g} after we set {value:g}: is the parameter locked, or is "
                               "another client setting it back?")
        confirmed[name] = now
        say(f"{name} = {now:g}" + (" (set)" if name in changed else " (already)"))
    time.sleep(settle_s if changed else 0)  # PX4's commander re-reads the parameters on its next cycle
    return Px4GateReport(confirmed, tuple(changed))
