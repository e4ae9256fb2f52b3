"""The PX4 arm authorizer's rules on its own clock: when it answers, what, and what it refuses to
answer. The same rules against real PX4 SITL and the virtual PX4 are in test_gate_px4.py."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("MAVLINK20", "1")

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.gate.px4 import MIN_DELAY_S, ArmAuthorizer
from agent.mavlink.ids import (
    MAV_ARM_AUTH_DENIED_REASON_GENERIC,
    MAV_CMD_ARM_AUTHORIZATION_REQUEST,
    MAV_MODE_FLAG_SAFETY_ARMED,
    MAV_RESULT_ACCEPTED,
    MAV_RESULT_DENIED,
    MAV_RESULT_TEMPORARILY_REJECTED,
)
from attest.models import Code, Reason, Verdict

PASS = Verdict.from_reasons([])
FAIL = Verdict.from_reasons([Reason(Code.PARAM_PINNED, "NAV_RCL_ACT 0, approved 2", "fc.param:NAV_RCL_ACT")])
REATTESTING = Verdict.from_reasons([Reason(Code.REATTESTING, "re-attesting: parameter changed")])
FC = (1, 1)
AGENT = (1, 191)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Wire:
    """What the authorizer sends: a pymavlink encoder and the messages it was given."""

    def __init__(self) -> None:
        self.mav = mavlink2.MAVLink(None, srcSystem=AGENT[0], srcComponent=AGENT[1])
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    def receive(self, timeout: float) -> Any:
        return None

    def mavlink20(self) -> bool:
        return True

    def of(self, mtype: str) -> list[Any]:
        return [m for m in self.sent if m.get_type() == mtype]


def _from(src: tuple[int, int], msg: Any) -> Any:
    """``msg`` as received from ``src`` (packed and parsed, so its header says who sent it)."""
    packer = mavlink2.MAVLink(None, srcSystem=src[0], srcComponent=src[1])
    packer.robust_parsing = True
    data = msg.pack(packer)
    return mavlink2.MAVLink(None).parse_char(data)


def request(target_system: int = AGENT[0], src: tuple[int, int] = FC) -> Any:
    return _from(src, mavlink2.MAVLink_command_long_message(target_system, 0, MAV_CMD_ARM_AUTHORIZATION_REQUEST, 0,
                                                            0, 0, 0, 0, 0, 0, 0))


def heartbeat(armed: bool) -> Any:
    return _from(FC, mavlink2.MAVLink_heartbeat_message(2, 12, MAV_MODE_FLAG_SAFETY_ARMED if armed else 0, 0, 3, 3))


@pytest.fixture()
def rig() -> tuple[ArmAuthorizer, Wire, Clock]:
    wire, clock = Wire(), Clock()
    return ArmAuthorizer(wire, own=AGENT, fc=FC, clock=clock), wire, clock


def test_a_pass_is_accepted_with_a_validity_no_longer_than_the_keep_alive_window(rig: Any) -> None:
    auth, wire, clock = rig
    auth.send(PASS)
    auth.observe(request())
    auth.keep_alive()
    assert wire.of("COMMAND_ACK") == [], "answered in the same 4 ms step as the request: PX4 would ignore it"
    clock.t += MIN_DELAY_S
    auth.keep_alive()
    (ack,) = wire.of("COMMAND_ACK")
    assert (ack.command, ack.result, ack.target_system, ack.target_component) == (
        MAV_CMD_ARM_AUTHORIZATION_REQUEST, MAV_RESULT_ACCEPTED, FC[0], FC[1])
    assert 1 <= ack.result_param2 <= 3
    assert wire.of("STATUSTEXT") == []


def test_a_fail_is_denied_with_the_reason_in_words(rig: Any) -> None:
    auth, wire, clock = rig
    auth.send(FAIL)
    auth.observe(request())
    clock.t += 0.01
    auth.keep_alive()
    (ack,) = wire.of("COMMAND_ACK")
    assert (ack.result, ack.progress, ack.result_param2) == (MAV_RESULT_DENIED, MAV_ARM_AUTH_DENIED_REASON_GENERIC, 0)
    (text,) = wire.of("STATUSTEXT")
    assert text.text == "FlightSeal: pinned NAV_RCL_ACT"


def test_a_pass_in_progress_is_temporarily_rejected(rig: Any) -> None:
    auth, wire, clock = rig
    auth.send(REATTESTING)
    auth.observe(request())
    clock.t += 0.01
    assert auth.send_nowait()  # from a pass's tick
    (ack,) = wire.of("COMMAND_ACK")
    assert ack.result == MAV_RESULT_TEMPORARILY_REJECTED
    assert wire.of("STATUSTEXT")[0].text == "FlightSeal: re-attesting"


def test_no_verdict_yet_is_denied(rig: Any) -> None:
    auth, wire, clock = rig
    auth.observe(request())
    clock.t += 0.01
    auth.keep_alive()
    assert wire.of("COMMAND_ACK")[0].result == MAV_RESULT_DENIED
    assert wire.of("STATUSTEXT")[0].text == "FlightSeal: no verdict in force"


def test_a_request_older_than_the_fcs_timeout_is_never_answered(rig: Any) -> None:
    auth, wire, clock = rig
    auth.send(PASS)
    auth.observe(request())
    clock.t += 1.5  # PX4 waited 1 s (COM_ARM_AUTH_TO) and said "No response"
    auth.keep_alive()
    assert wire.of("COMMAND_ACK") == []
    assert auth.stale == 1


def test_a_request_from_another_system_is_ignored(rig: Any) -> None:
    auth, wire, clock = rig
    auth.send(PASS)
    auth.observe(request(src=(77, 1)))
    auth.observe(request(target_system=42))  # PX4 asking someone else
    clock.t += 0.01
    auth.keep_alive()
    assert wire.of("COMMAND_ACK") == []
    assert (auth.requests, auth.foreign_requests) == (0, 1)


def test_an_arming_the_agent_did_not_authorize_is_counted(rig: Any) -> None:
    """PX4 v1.16 takes an ack from anyone (test_gate_px4.py shows it on SITL): an arming with no
    ACCEPTED of ours before it is a forged authorization (or arm authorization turned off)."""
    auth, _wire, _clock = rig
    auth.send(FAIL)
    auth.observe(heartbeat(armed=False))
    auth.observe(heartbeat(armed=True))
    assert (auth.unauthorized_arms, auth.foreign) == (1, 1)


def test_an_arming_the_agent_authorized_is_not_counted(rig: Any) -> None:
    auth, _wire, clock = rig
    auth.send(PASS)
    auth.observe(heartbeat(armed=False))
    auth.observe(request())
    clock.t += 0.01
    auth.keep_alive()
    clock.t += 0.5
    auth.observe(heartbeat(armed=True))
    assert auth.unauthorized_arms == 0


def test_a_vehicle_armed_before_the_agent_started_is_not_called_forged(rig: Any) -> None:
    auth, _wire, _clock = rig
    auth.observe(heartbeat(armed=True))
    auth.observe(heartbeat(armed=True))
    assert auth.unauthorized_arms == 0


def test_an_ack_for_3001_in_another_systems_name_is_counted(rig: Any) -> None:
    auth, _wire, _clock = rig
    auth.observe(_from((77, 190), mavlink2.MAVLink_command_ack_message(MAV_CMD_ARM_AUTHORIZATION_REQUEST,
                                                                      MAV_RESULT_ACCEPTED, 0, 5, 1, 1)))
    assert auth.forged_acks == 1


def test_validity_beyond_the_keep_alive_window_is_refused() -> None:
    with pytest.raises(ValueError, match="keep-alive window"):
        ArmAuthorizer(Wire(), own=AGENT, validity_s=10)


def test_the_fcs_own_ack_of_its_request_is_not_a_forgery(rig: Any) -> None:
    """With the agent on the FC's system id, PX4's commander also acks the request it addressed to its
    own system (seen on PX4 SITL instance 0): that is not someone speaking for the agent."""
    auth, _wire, _clock = rig
    auth.observe(_from(FC, mavlink2.MAVLink_command_ack_message(MAV_CMD_ARM_AUTHORIZATION_REQUEST, 3, 0, 0, 0, 0)))
    assert auth.forged_acks == 0
