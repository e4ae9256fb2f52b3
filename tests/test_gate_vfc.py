"""The shipped gate inside the virtual FC (sim.vfc + LuaScriptingAuthority), driven by GateClient."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.gate.client import GateClient, gate_script
from attest.models import Code, Reason, Verdict
from sim.vfc.lua_host import LuaScriptingAuthority

vfc = pytest.importorskip("sim.vfc")

PASS = Verdict(True)
FAIL = Verdict(False, (Reason(Code.FIRMWARE_MISMATCH, "other build"),))
KEY = bytes(range(32, 64))


@pytest.fixture
def fc() -> Iterator[Any]:
    config = vfc.VfcConfig(scripts={"flightseal_gate.lua": gate_script()}, gate_key=KEY)
    with vfc.VirtualFC(config, authority=LuaScriptingAuthority()) as fc:
        yield fc


@pytest.fixture
def conn(fc: Any) -> Iterator[Any]:
    from pymavlink import mavutil

    if not os.environ.get("MAVLINK20"):
        os.environ["MAVLINK20"] = "1"
        mavutil.set_dialect("ardupilotmega")
    c = mavutil.mavlink_connection(fc.url(1), source_system=1, source_component=191, autoreconnect=False)
    assert c.wait_heartbeat(timeout=5) is not None
    yield c
    c.close()


def arm(conn: Any, on: bool = True) -> tuple[int, str]:
    """COMMAND_LONG ARM_DISARM; returns (ack result, the Arm: text if refused)."""
    conn.mav.command_long_send(1, 1, 400, 0, 1.0 if on else 0.0, 0, 0, 0, 0, 0, 0)
    result, text = -1, ""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        msg = conn.recv_match(type=["COMMAND_ACK", "STATUSTEXT"], blocking=True, timeout=0.2)
        if msg is None:
            continue
        if msg.get_type() == "COMMAND_ACK" and msg.command == 400:
            result = msg.result
            if result == 0 or not on:
                return result, ""
        elif msg.get_type() == "STATUSTEXT" and msg.text.startswith("Arm: "):
            text = msg.text
        if result != -1 and text:
            return result, text
    return result, text


def test_arming_is_refused_until_a_pass_and_a_fail_in_flight_only_blocks_the_next_arming(fc: Any,
                                                                                          conn: Any) -> None:
    assert arm(conn) == (4, "Arm: FlightSeal: waiting")
    client = GateClient(conn, KEY)
    client.send(PASS)
    assert arm(conn) == (0, "")
    client.send(FAIL)
    time.sleep(0.3)
    assert fc.armed
    assert arm(conn, on=False)[0] == 0
    assert arm(conn) == (4, "Arm: FlightSeal: firmware-mismatch")


def test_fc_reboot_resets_the_gate_to_waiting(fc: Any, conn: Any) -> None:
    GateClient(conn, KEY).send(PASS)
    authority = fc.authority
    assert isinstance(authority, LuaScriptingAuthority)
    fc.reboot()
    assert fc.wait_for(lambda: fc.boots == 2, timeout=5)
    assert authority.arming_check() == (False, "FlightSeal: waiting")
