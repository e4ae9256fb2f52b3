"""The link posture (ADR 0014): what keeps the gate's verdicts enforced, as the agent sees it.

Claims: ``signed`` (the agent's link has a signing key and the FC's last heartbeat carried a
signature that key verified), ``script_checksums`` (ArduPilot checks the scripts: scripting on,
``SCR_LD_CHECKSUM`` and ``SCR_RUN_CHECKSUM`` set, ``SCR_DEBUG_OPTS`` bit 4 clear), ``gate_stopped``
(the FC said "Scripting: stopped" since it booted), ``mavlink_serials`` (the SERIALn ports set to
MAVLink), ``serial0_mavlink`` (USB/SERIAL0, which ArduPilot never checks for signatures) and
``link`` (serial, tcp, udpin or udpout: a UDP endpoint is a router between agent and FC) and
``gate_forgeries`` (verdicts or acks in the agent's or the gate's name that the gate key did not
make, seen since the FC booted: something else on the channel speaks for them; ADR 0015) and
``gate_answers`` (whether the gate acked the agent's last verdict; absent before the first one).
"""

from __future__ import annotations

from agent.gate.install import DEBUG_DISABLE_PRE_ARM
from agent.mavlink.link import Link
from agent.measure.base import Collector, Inventory, Pass
from attest.models import ClaimValue, Kind, Measurement, Strength

COMPONENT = "fc.link"
MAVLINK_PROTOCOLS = (1, 2)  # SERIALn_PROTOCOL: MAVLink1, MAVLink2


def collect_posture(link: Link, inv: Inventory) -> Measurement:
    hb = link.fc_heartbeat
    claims: dict[str, ClaimValue] = {
        "signed": bool(link.config.signing_key) and hb is not None and bool(getattr(hb, "_signed", False)),
        "gate_stopped": link.scripting_stopped,
        "link": link.endpoint.kind,
        "gate_forgeries": link.gate_forgeries,
    }
    if link.gate_answers is not None:
        claims["gate_answers"] = link.gate_answers
    params = inv.fc_params
    if params is not None:
        claims["script_checksums"] = (params.get("SCR_ENABLE") == 1 and params.get("SCR_LD_CHECKSUM", -1) != -1
                                      and params.get("SCR_RUN_CHECKSUM", -1) != -1
                                      and not int(params.get("SCR_DEBUG_OPTS", 0)) & DEBUG_DISABLE_PRE_ARM)
        ports = [n for n in range(10) if params.get(f"SERIAL{n}_PROTOCOL") in MAVLINK_PROTOCOLS]
        claims["mavlink_serials"] = ",".join(map(str, ports))
        claims["serial0_mavlink"] = 0 in ports or "SERIAL0_PROTOCOL" not in params
    return Measurement(COMPONENT, Kind.POSTURE, {}, "mavlink", Strength.OBSERVED, claims)


def collect_px4_posture(link: Link, inv: Inventory) -> Measurement:
    """PX4's posture: no MAVLink signing in v1.16 and no scripts; what keeps the verdict enforced is
    that PX4 asks this agent before arming. ``arm_authorization``: ``COM_ARM_AUTH_REQ`` is 1,
    ``COM_ARM_AUTH_ID`` is the agent's system id and ``COM_ARM_AUTH_MET`` is 0 (ask at every arming);
    absent when the parameters were not measured (the parameter reason says so)."""
    claims: dict[str, ClaimValue] = {"signed": False, "link": link.endpoint.kind,
                                     "gate_forgeries": link.gate_forgeries}
    params = inv.fc_params
    if params is not None:
        claims["arm_authorization"] = (params.get("COM_ARM_AUTH_REQ") == 1
                                       and params.get("COM_ARM_AUTH_ID") == link.config.system_id
                                       and params.get("COM_ARM_AUTH_MET") == 0)
    return Measurement(COMPONENT, Kind.POSTURE, {}, "mavlink", Strength.OBSERVED, claims)


def _step(p: Pass) -> list[Measurement]:
    return [collect_posture(p.link, p.inv)]


def _px4_step(p: Pass) -> list[Measurement]:
    return [collect_px4_posture(p.link, p.inv)]


COLLECTOR = Collector("posture", COMPONENT, _step)
PX4_COLLECTOR = Collector("posture", COMPONENT, _px4_step)
