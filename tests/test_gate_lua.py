"""The shipped Lua gate, run by LuaGateHost: fail-closed, source and sequence checks, never disarms."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.gate import (
    ACCEPTED,
    DENIED,
    FAILED,
    GATE_COMMAND,
    GATE_SCRIPT_PATH,
    MAGIC,
    TUNNEL_TYPE,
    VERDICT_FAIL,
    VERDICT_PASS,
    Sequence,
    encode_verdict,
    gate_script,
    gate_text,
    gate_version,
    verdict_payload,
)
from attest.models import PARAM_COMPONENT_PREFIX, Code, Reason, Verdict
from sim.lua_host import LuaGateHost, x25_crc

AGENT = (1, 191)
CHANNEL = 1
PASS = Verdict(True)
LAPSE_MS = 3000


def fail(code: Code = Code.FIRMWARE_MISMATCH) -> Verdict:
    return Verdict(False, (Reason(code, "test"),))


def frame(msg: object, sysid: int = AGENT[0], compid: int = AGENT[1]) -> bytes:
    mav = mavlink2.MAVLink(None, srcSystem=sysid, srcComponent=compid)
    return bytes(msg.pack(mav))  # type: ignore[attr-defined]


def verdict_frame(verdict: Verdict, epoch: int, counter: int, **ids: int) -> bytes:
    return frame(encode_verdict(verdict, Sequence(epoch, counter)), **ids)


def raw_tunnel(data: bytes, payload_type: int = TUNNEL_TYPE, sysid: int = AGENT[0], compid: int = AGENT[1],
               length: int | None = None) -> bytes:
    """A TUNNEL frame to the FC carrying ``data`` (any bytes, any claimed length) with a correct CRC."""
    payload = struct.pack("<HBBB", payload_type, 1, 1, len(data) if length is None else length) + data
    header = struct.pack("<BBBBBB", len(payload), 0, 0, 0, sysid, compid) + (385).to_bytes(3, "little")
    crc = x25_crc(bytes([147]), x25_crc(header + payload))
    return b"\xfd" + header + payload + struct.pack("<H", crc)


class Rig:
    """The gate in a host, with a clock that only moves forward."""

    def __init__(self, start_ms: int = 0, **kwargs: object) -> None:
        self.now = start_ms
        self.host = LuaGateHost(GATE_SCRIPT_PATH, now_ms=start_ms, **kwargs)  # type: ignore[arg-type]
        self.host.tick(self.now)
        self.parser = mavlink2.MAVLink(None)

    def advance(self, ms: int) -> None:
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + 100)
            self.host.tick(self.now)

    def send(self, data: bytes, channel: int = CHANNEL) -> list[object]:
        """Deliver a frame, let the gate run once, return the acks it sent."""
        self.host.deliver(channel, data, self.now)
        self.advance(100)
        return self.acks()

    def acks(self) -> list[object]:
        acks: list[object] = []
        for _chan, out in self.host.drain_outgoing():
            acks.extend(m for m in self.parser.parse_buffer(out) or [] if m.get_type() == "COMMAND_ACK")
        return acks

    def allowed(self) -> bool:
        return self.host.arming_check()[0]

    def reason(self) -> str:
        return self.host.arming_check()[1]


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_arming_is_blocked_from_boot_with_waiting_text(rig: Rig) -> None:
    assert rig.host.arming_check() == (False, "FlightSeal: waiting")
    rig.advance(10_000)
    assert rig.host.arming_check() == (False, "FlightSeal: waiting")
    assert rig.host.running == ["./scripts/flightseal_gate.lua"]


def test_pass_allows_arming_and_ack_carries_sequence_and_version(rig: Rig) -> None:
    data = verdict_frame(PASS, 7, 42)
    assert data[1] < 133, "MAVLink2 truncated the payload; the gate must pad it"
    acks = rig.send(data)
    assert rig.allowed()
    assert len(acks) == 1
    ack = acks[0]
    assert (ack.command, ack.result, ack.result_param2) == (GATE_COMMAND, ACCEPTED, 42)  # type: ignore[attr-defined]
    assert ack.progress == gate_version()  # type: ignore[attr-defined]
    assert (ack.target_system, ack.target_component) == AGENT  # type: ignore[attr-defined]
    assert (ack.get_srcSystem(), ack.get_srcComponent()) == (1, 1)  # type: ignore[attr-defined]


def test_pass_lapses_to_blocked_without_a_fresh_one(rig: Rig) -> None:
    rig.send(verdict_frame(PASS, 1, 1))
    rig.advance(LAPSE_MS - 300)
    assert rig.allowed()
    rig.advance(300)
    assert rig.host.arming_check() == (False, "FlightSeal: verdict lapsed")


def test_fresh_passes_keep_arming_allowed(rig: Rig) -> None:
    for counter in range(1, 11):
        rig.send(verdict_frame(PASS, 1, counter))
        rig.advance(900)
        assert rig.allowed()


def test_fail_verdict_blocks_with_its_first_reason_text(rig: Rig) -> None:
    rig.send(verdict_frame(PASS, 1, 1))
    verdict = Verdict(False, (Reason(Code.FIRMWARE_MISMATCH, "a"), Reason(Code.SCRIPT_UNKNOWN, "b")))
    acks = rig.send(verdict_frame(verdict, 1, 2))
    assert rig.host.arming_check() == (False, "FlightSeal: firmware-mismatch")
    assert [a.result for a in acks] == [ACCEPTED]  # type: ignore[attr-defined]
    rig.advance(60_000)
    assert rig.reason() == "FlightSeal: firmware-mismatch"


def test_every_reason_code_shows_the_text_the_python_verdict_names(rig: Rig) -> None:
    for counter, code in enumerate(Code, start=1):
        rig.send(verdict_frame(fail(code), 1, counter))
        assert rig.host.arming_check() == (False, gate_text(fail(code)))
        assert len(rig.reason()) <= 41


@pytest.mark.parametrize(("code", "text"), [(Code.PARAM_MISMATCH, "FlightSeal: param FS_THR_ENABLE"),
                                            (Code.PARAM_PINNED, "FlightSeal: pinned ARMING_CHECK")])
def test_a_parameter_reason_shows_the_parameter_name_to_the_pilot(rig: Rig, code: Code, text: str) -> None:
    name = text.rsplit(" ", 1)[1]
    verdict = Verdict(False, (Reason(code, "x", PARAM_COMPONENT_PREFIX + name),))
    rig.send(verdict_frame(verdict, 1, 1))
    assert rig.host.arming_check() == (False, text)


def test_the_longest_parameter_name_fits_the_pilot_text(rig: Rig) -> None:
    verdict = Verdict(False, (Reason(Code.PARAM_PINNED, "x", PARAM_COMPONENT_PREFIX + "ABCDEFGHIJKLMNOP"),))
    rig.send(verdict_frame(verdict, 1, 1))
    assert rig.host.arming_check() == (False, "FlightSeal: pinned ABCDEFGHIJKLMNOP")


@pytest.mark.parametrize("text", ["", "FlightSeal: ", "Arm: anything goes", "FlightSeal: x\x07", "FlightSeal: é",
                                  "FlightSeal: " + "x" * 30])
def test_a_fail_text_that_is_not_ours_or_does_not_fit_is_a_bad_verdict(rig: Rig, text: str) -> None:
    rig.send(verdict_frame(PASS, 1, 1))
    raw = text.encode("utf-8")
    data = MAGIC + struct.pack("<BiiB", VERDICT_FAIL, 1, 2, len(raw)) + raw
    acks = rig.send(raw_tunnel(data))
    assert rig.host.arming_check() == (False, "FlightSeal: bad verdict")
    assert [a.result for a in acks] == [FAILED]  # type: ignore[attr-defined]


def test_version_is_a_constant_in_the_file_and_announced_at_start(rig: Rig) -> None:
    assert gate_version() >= 1
    assert rig.host.texts[0].text == f"FlightSeal gate v{gate_version()} running"


def test_verdict_on_another_channel_is_ignored(rig: Rig) -> None:
    acks = rig.send(verdict_frame(PASS, 1, 1), channel=0)
    assert acks == []
    assert rig.reason() == "FlightSeal: waiting"
    assert rig.send(verdict_frame(PASS, 1, 2), channel=2) == []
    assert not rig.allowed()


@pytest.mark.parametrize("ids", [{"sysid": 255, "compid": 191}, {"sysid": 1, "compid": 190},
                                 {"sysid": 2, "compid": 191}, {"sysid": 1, "compid": 1}])
def test_verdict_from_other_ids_is_ignored(rig: Rig, ids: dict[str, int]) -> None:
    assert rig.send(verdict_frame(PASS, 1, 1, **ids)) == []
    assert rig.reason() == "FlightSeal: waiting"


def test_replayed_pass_is_ignored_and_answered_denied(rig: Rig) -> None:
    old_pass = verdict_frame(PASS, 9, 1)
    rig.send(old_pass)
    rig.send(verdict_frame(fail(Code.PARAM_MISMATCH), 9, 2))
    acks = rig.send(old_pass)
    assert rig.reason() == "FlightSeal: param-mismatch"
    assert [(a.result, a.result_param2) for a in acks] == [(DENIED, 9)]  # type: ignore[attr-defined]


def test_reordered_verdict_is_ignored(rig: Rig) -> None:
    rig.send(verdict_frame(fail(Code.SCRIPT_MISMATCH), 3, 5))
    rig.send(verdict_frame(PASS, 3, 4))
    rig.send(verdict_frame(PASS, 3, 5))
    assert rig.reason() == "FlightSeal: script-mismatch"


def test_older_epoch_is_ignored_whatever_its_counter(rig: Rig) -> None:
    rig.send(verdict_frame(fail(), 100, 1))
    rig.send(verdict_frame(PASS, 99, 2**31 - 1))
    assert not rig.allowed()
    rig.send(verdict_frame(PASS, 101, 1))
    assert rig.allowed()


def test_fail_or_lapse_while_armed_never_disarms_and_refuses_next_arming(rig: Rig) -> None:
    rig.send(verdict_frame(PASS, 1, 1))
    assert rig.allowed()
    rig.host.set_armed(True)
    rig.send(verdict_frame(fail(Code.COMPONENT_UNKNOWN), 1, 2))
    rig.advance(2 * LAPSE_MS)
    rig.send(verdict_frame(PASS, 1, 3))
    rig.advance(2 * LAPSE_MS)
    assert rig.host.armed
    assert (rig.host.disarm_requests, rig.host.arm_requests) == (0, 0)
    rig.host.set_armed(False)
    assert rig.host.arming_check() == (False, "FlightSeal: verdict lapsed")


def test_corrupted_verdict_with_bad_crc_is_ignored(rig: Rig) -> None:
    good = bytearray(verdict_frame(fail(), 1, 1))
    rig.send(bytes(good))
    bad = bytearray(verdict_frame(PASS, 1, 2))
    bad[10 + 5 + 4] ^= 0x03  # the verdict kind (pass → fail); the CRC no longer matches
    assert rig.send(bytes(bad)) == []
    assert rig.reason() == "FlightSeal: firmware-mismatch"
    assert rig.host.running


def test_malformed_verdict_from_the_agent_blocks_and_is_answered_failed(rig: Rig) -> None:
    rig.send(verdict_frame(PASS, 1, 1))
    data = b"FSV9" + struct.pack("<BiiB", VERDICT_PASS, 1, 2, 0)
    acks = rig.send(raw_tunnel(data))
    assert rig.host.arming_check() == (False, "FlightSeal: bad verdict")
    assert [(a.result, a.result_param2) for a in acks] == [(FAILED, 2)]  # type: ignore[attr-defined]


def test_unknown_verdict_kind_pass_with_text_or_text_past_the_payload_blocks(rig: Rig) -> None:
    cases = [(VERDICT_PASS, b"FlightSeal: x", None), (3, b"", None), (VERDICT_FAIL, b"", None),
             (VERDICT_FAIL, b"FlightSeal: firmware-mismatch", 20)]
    for counter, (kind, text, claimed_len) in enumerate(cases, start=1):
        rig.send(verdict_frame(PASS, 1, 10 * counter))
        data = MAGIC + struct.pack("<BiiB", kind, 1, 10 * counter + 1, len(text)) + text
        rig.send(raw_tunnel(data, length=claimed_len))
        assert rig.reason() == "FlightSeal: bad verdict", (kind, text, claimed_len)


def test_short_or_foreign_tunnels_are_not_taken(rig: Rig) -> None:
    good = verdict_payload(VERDICT_PASS, Sequence(1, 1), "")
    assert rig.send(raw_tunnel(good, payload_type=0xF5E1)) == []  # the challenge's tunnel type
    assert rig.send(raw_tunnel(good[:13])) == []
    assert rig.send(raw_tunnel(good, length=200)) == []
    assert rig.reason() == "FlightSeal: waiting"


def test_other_commands_and_messages_are_not_taken(rig: Rig) -> None:
    other = mavlink2.MAVLink_command_int_message(1, 1, 0, GATE_COMMAND, 0, 0, 4608817.0, 1.0, 0.0, 0.0, 1, 1, 0.0)
    assert rig.send(frame(other)) == []  # the verdict transport of gate v1
    hb = mavlink2.MAVLink_heartbeat_message(18, 8, 0, 0, 4, 3)
    assert rig.send(frame(hb)) == []
    assert rig.reason() == "FlightSeal: waiting"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=128), junk=st.binary(max_size=64))
def test_arbitrary_payloads_never_crash_the_gate_or_open_it_wrongly(data: bytes, junk: bytes) -> None:
    rig = Rig()
    rig.host.deliver(CHANNEL, junk)
    rig.send(raw_tunnel(data))
    padded = data + bytes(14)
    tag, kind, epoch, counter, tlen = struct.unpack_from("<4sBiiB", padded)
    well_formed_pass = (len(data) >= 14 and tag == MAGIC and kind == VERDICT_PASS and tlen == 0
                        and (epoch, counter) > (0, 0))
    assert rig.allowed() == well_formed_pass
    assert rig.host.running, rig.host.texts
    rig.send(verdict_frame(PASS, 2**31 - 1, 2**31 - 1))
    assert rig.allowed()


def test_script_error_blocks_and_the_gate_recovers_on_the_next_verdict(rig: Rig,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rig.send(verdict_frame(PASS, 1, 1))
    assert rig.allowed()

    def broken() -> None:
        raise RuntimeError("simulated binding failure")

    monkeypatch.setattr(rig.host._bindings, "mav_receive", broken)
    rig.advance(100)
    assert rig.host.arming_check() == (False, "FlightSeal: gate error")
    assert any("gate error" in t.text and t.severity == 3 for t in rig.host.texts)
    monkeypatch.undo()
    rig.send(verdict_frame(PASS, 1, 2))
    assert rig.allowed()
    assert rig.host.running


def test_worst_case_run_fits_in_half_the_vm_instruction_budget() -> None:
    rig = Rig(vm_instructions=5000)
    for counter in range(1, 9):  # a full queue of verdicts that pass every check
        rig.host.deliver(CHANNEL, verdict_frame(PASS, 1, counter), rig.now)
    rig.advance(300)
    assert rig.host.running, rig.host.texts
    assert len(rig.acks()) == 8
    assert rig.allowed()


def test_millis_wraparound_keeps_lapse_timing(rig: Rig) -> None:
    rig = Rig(start_ms=2**32 - 1000)
    rig.send(verdict_frame(PASS, 1, 1))
    rig.advance(2500)  # across the 32-bit wrap of millis()
    assert rig.allowed()
    rig.advance(LAPSE_MS)
    assert rig.reason() == "FlightSeal: verdict lapsed"


def test_without_a_free_aux_auth_slot_arming_stays_refused() -> None:
    taker = b"local id = arming:get_aux_auth_id() arming:set_aux_auth_passed(id) return"
    host = LuaGateHost()
    for i in range(3):
        host.add_script(taker, f"taker{i}.lua")
    host.add_script(GATE_SCRIPT_PATH)
    host.tick(0)
    assert host.arming_check() == (False, "Too many auxiliary authorisers")
    assert any("no aux auth slot" in t.text for t in host.texts)


def test_require_signed_takes_only_signed_verdicts() -> None:
    source = gate_script().replace(b"local REQUIRE_SIGNED = false", b"local REQUIRE_SIGNED = true")
    assert source != gate_script()
    rig = Rig()
    rig.host = LuaGateHost(source)
    rig.host.tick(rig.now)
    assert rig.send(verdict_frame(PASS, 1, 1)) == []
    assert not rig.allowed()
    mav = mavlink2.MAVLink(None, srcSystem=AGENT[0], srcComponent=AGENT[1])
    mav.signing.secret_key = bytes(range(32))
    mav.signing.link_id = 1
    mav.signing.sign_outgoing = True
    signed = bytes(encode_verdict(PASS, Sequence(1, 2)).pack(mav))
    assert signed[2] & 1
    assert len(rig.send(signed)) == 1
    assert rig.allowed()


def test_gate_after_scripting_restart_blocks_again(rig: Rig) -> None:
    rig.send(verdict_frame(PASS, 1, 1))
    assert rig.allowed()
    rig.host.restart_scripting()
    rig.advance(100)
    assert rig.host.arming_check() == (False, "FlightSeal: waiting")
    rig.send(verdict_frame(PASS, 1, 1))  # the gate forgot the sequence with its state
    assert rig.allowed()
