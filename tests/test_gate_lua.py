"""The shipped Lua gate, run by LuaGateHost: fail-closed, authenticated (ADR 0015), source and sequence
checks, never disarms."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.gate.client import (
    ACCEPTED,
    DENIED,
    FAILED,
    GATE_SCRIPT_PATH,
    MAGIC,
    STALE,
    TUNNEL_TYPE,
    VERDICT_FAIL,
    VERDICT_PASS,
    ForgedAck,
    GateAck,
    Sequence,
    decode_ack,
    encode_verdict,
    gate_mac,
    gate_text,
    gate_version,
    verdict_payload,
)
from agent.gate.key import FC_KEY_NAME, GATE_VM_I_COUNT
from attest.models import PARAM_COMPONENT_PREFIX, Code, Reason, Verdict
from sim.vfc.lua_host import LuaGateHost, x25_crc

AGENT = (1, 191)
CHANNEL = 1
PASS = Verdict(True)
LAPSE_MS = 3000
KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(32))


def fail(code: Code = Code.FIRMWARE_MISMATCH) -> Verdict:
    return Verdict(False, (Reason(code, "test"),))


def frame(msg: object, sysid: int = AGENT[0], compid: int = AGENT[1]) -> bytes:
    mav = mavlink2.MAVLink(None, srcSystem=sysid, srcComponent=compid)
    return bytes(msg.pack(mav))  # type: ignore[attr-defined]


def raw_tunnel(data: bytes, payload_type: int = TUNNEL_TYPE, sysid: int = AGENT[0], compid: int = AGENT[1],
               length: int | None = None) -> bytes:
    """A TUNNEL frame to the FC carrying ``data`` (any bytes, any claimed length) with a correct CRC."""
    payload = struct.pack("<HBBB", payload_type, 1, 1, len(data) if length is None else length) + data
    header = struct.pack("<BBBBBB", len(payload), 0, 0, 0, sysid, compid) + (385).to_bytes(3, "little")
    crc = x25_crc(bytes([147]), x25_crc(header + payload))
    return b"\xfd" + header + payload + struct.pack("<H", crc)


def signed_data(kind: int, nonce: bytes, epoch: int, counter: int, text: bytes, key: bytes = KEY) -> bytes:
    """A verdict payload with any text bytes (even ones the agent would never send), MAC'd with ``key``."""
    data = MAGIC + struct.pack("<B8siiB", kind, nonce, epoch, counter, len(text)) + text
    return data + gate_mac(key, data)


class Rig:
    """The gate in a host with its key file, a clock that only moves forward, and the gate's nonce."""

    def __init__(self, start_ms: int = 0, *, key: bytes | None = KEY, bootcnt: int = 7,
                 params: dict[str, float] | None = None, **kwargs: object) -> None:
        self.now = start_ms
        self.params: dict[str, float] = {"SCR_VM_I_COUNT": GATE_VM_I_COUNT, "STAT_BOOTCNT": bootcnt,
                                         **(params or {})}
        files = {FC_KEY_NAME: key} if key is not None else {}
        self.host = LuaGateHost(GATE_SCRIPT_PATH, now_ms=start_ms, params=self.params, files=files,
                                **kwargs)  # type: ignore[arg-type]
        self.host.tick(self.now)
        self.parser = mavlink2.MAVLink(None)
        self.nonce = bytes(8)
        self.forged_acks = 0

    def learn_nonce(self) -> bytes:
        """What the agent does first: a verdict for no nonce, answered STALE with the gate's."""
        acks = self.send(self.verdict(fail(), 0, 0))
        assert [a.result for a in acks] == [STALE], acks
        self.nonce = acks[0].nonce
        return self.nonce

    def verdict(self, verdict: Verdict, epoch: int, counter: int, key: bytes = KEY, nonce: bytes | None = None,
                **ids: int) -> bytes:
        msg = encode_verdict(verdict, Sequence(epoch, counter), key, self.nonce if nonce is None else nonce)
        return frame(msg, **ids)

    def advance(self, ms: int) -> None:
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + 100)
            self.host.tick(self.now)

    def send(self, data: bytes, channel: int = CHANNEL) -> list[GateAck]:
        """Deliver a frame, let the gate run once, return the acks it sent."""
        self.host.deliver(channel, data, self.now)
        self.advance(100)
        return self.acks()

    def acks(self) -> list[GateAck]:
        acks: list[GateAck] = []
        for _chan, out in self.host.drain_outgoing():
            for m in self.parser.parse_buffer(out) or []:
                assert (m.get_srcSystem(), m.get_srcComponent()) == (1, 1)
                assert (m.target_system, m.target_component) == AGENT
                try:
                    ack = decode_ack(m, KEY)
                except ForgedAck:
                    self.forged_acks += 1
                    continue
                assert ack is not None, m
                acks.append(ack)
        return acks

    def allowed(self) -> bool:
        return self.host.arming_check()[0]

    def reason(self) -> str:
        return self.host.arming_check()[1]


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    r.learn_nonce()
    return r


def test_arming_is_blocked_from_boot_with_waiting_text() -> None:
    rig = Rig()
    assert rig.host.arming_check() == (False, "FlightSeal: waiting")
    rig.advance(10_000)
    assert rig.host.arming_check() == (False, "FlightSeal: waiting")
    assert rig.host.running == ["./scripts/flightseal_gate.lua"]


def test_the_first_verdict_learns_the_nonce_and_changes_nothing() -> None:
    rig = Rig()
    acks = rig.send(rig.verdict(PASS, 1, 1))
    assert [(a.result, a.sequence) for a in acks] == [(STALE, Sequence(1, 1))]
    assert acks[0].nonce != bytes(8) and acks[0].gate_version == gate_version()
    assert rig.reason() == "FlightSeal: waiting"
    rig.nonce = acks[0].nonce
    assert [a.result for a in rig.send(rig.verdict(PASS, 1, 1))] == [ACCEPTED]  # the same sequence, now bound
    assert rig.allowed()


def test_pass_allows_arming_and_the_ack_is_authenticated_with_sequence_and_version(rig: Rig) -> None:
    data = rig.verdict(PASS, 7, 42)
    assert data[1] < 133, "MAVLink2 truncated the payload; the gate must pad it"
    acks = rig.send(data)
    assert rig.allowed()
    assert [(a.result, a.sequence, a.gate_epoch, a.foreign) for a in acks] == [(ACCEPTED, Sequence(7, 42), 7, 0)]
    assert acks[0].gate_version == gate_version() and acks[0].nonce == rig.nonce
    assert rig.forged_acks == 0


@pytest.mark.parametrize("key", [None, b"", bytes(31), bytes(33)])
def test_without_a_32_byte_key_the_gate_refuses_and_says_why(key: bytes | None) -> None:
    rig = Rig(key=key)
    assert rig.host.arming_check() == (False, "FlightSeal: no gate key")
    assert rig.send(rig.verdict(PASS, 1, 1)) == []
    assert any("no gate key" in t.text and t.severity == 2 for t in rig.host.texts)


def test_a_vm_budget_too_small_for_the_macs_refuses_and_says_why() -> None:
    rig = Rig(params={"SCR_VM_I_COUNT": 10000})  # ArduPilot's default
    assert rig.host.arming_check() == (False, "FlightSeal: SCR_VM_I_COUNT too low")
    assert rig.host.running == []


def test_a_verdict_made_with_another_key_is_never_taken_or_answered_and_is_reported(rig: Rig) -> None:
    assert rig.send(rig.verdict(PASS, 1, 1, key=OTHER_KEY)) == []
    assert rig.send(rig.verdict(PASS, 1, 2, key=OTHER_KEY)) == []
    assert not rig.allowed()
    assert [t.text for t in rig.host.texts].count("FlightSeal: forged verdict seen") == 1
    acks = rig.send(rig.verdict(PASS, 1, 3))
    assert [(a.result, a.foreign) for a in acks] == [(ACCEPTED, 2)]


def test_a_forged_verdict_with_the_largest_sequence_cannot_wedge_the_gate(rig: Rig) -> None:
    rig.send(rig.verdict(PASS, 2**31 - 1, 2**31 - 1, key=OTHER_KEY))
    acks = rig.send(rig.verdict(fail(), 5, 1))
    assert [(a.result, a.gate_epoch) for a in acks] == [(ACCEPTED, 5)]
    assert rig.reason() == "FlightSeal: firmware-mismatch"


def test_a_changed_byte_with_a_recomputed_crc_fails_the_mac(rig: Rig) -> None:
    rig.send(rig.verdict(fail(), 1, 1))
    good = verdict_payload(VERDICT_FAIL, Sequence(1, 2), "FlightSeal: firmware-mismatch", KEY, rig.nonce)
    for i, flip in ((4, VERDICT_PASS ^ VERDICT_FAIL), (13, 1), (30, 0x20), (len(good) - 1, 1)):
        bad = bytearray(good)
        bad[i] ^= flip
        assert rig.send(raw_tunnel(bytes(bad))) == [], i
    assert rig.reason() == "FlightSeal: firmware-mismatch"
    assert rig.send(rig.verdict(PASS, 1, 3))[0].foreign == 4


def test_a_verdict_for_an_earlier_load_is_stale_after_a_restart_or_a_reboot(rig: Rig) -> None:
    old_pass = rig.verdict(PASS, 1, 1)
    rig.send(old_pass)
    assert rig.allowed()
    first = rig.nonce
    rig.host.restart_scripting(rig.now)
    rig.advance(100)
    assert rig.host.arming_check() == (False, "FlightSeal: waiting")
    acks = rig.send(old_pass)  # its sequence is newer than anything this load took: only the nonce stops it
    assert [a.result for a in acks] == [STALE] and acks[0].nonce != first
    assert not rig.allowed()
    rebooted = Rig(bootcnt=8)
    acks = rebooted.send(old_pass)
    assert [a.result for a in acks] == [STALE] and acks[0].nonce not in (first, bytes(8))
    assert not rebooted.allowed()


def test_each_load_draws_its_own_nonce() -> None:
    nonces = {Rig(bootcnt=n).learn_nonce() for n in range(5)}
    nonces |= {Rig(bootcnt=1, start_ms=ms).learn_nonce() for ms in (0, 1000, 2000)}
    assert len(nonces) == 8


def test_pass_lapses_to_blocked_without_a_fresh_one(rig: Rig) -> None:
    rig.send(rig.verdict(PASS, 1, 1))
    rig.advance(LAPSE_MS - 300)
    assert rig.allowed()
    rig.advance(300)
    assert rig.host.arming_check() == (False, "FlightSeal: verdict lapsed")


def test_fresh_passes_keep_arming_allowed(rig: Rig) -> None:
    for counter in range(1, 11):
        rig.send(rig.verdict(PASS, 1, counter))
        rig.advance(900)
        assert rig.allowed()


def test_fail_verdict_blocks_with_its_first_reason_text(rig: Rig) -> None:
    rig.send(rig.verdict(PASS, 1, 1))
    verdict = Verdict(False, (Reason(Code.FIRMWARE_MISMATCH, "a"), Reason(Code.SCRIPT_UNKNOWN, "b")))
    acks = rig.send(rig.verdict(verdict, 1, 2))
    assert rig.host.arming_check() == (False, "FlightSeal: firmware-mismatch")
    assert [a.result for a in acks] == [ACCEPTED]
    rig.advance(60_000)
    assert rig.reason() == "FlightSeal: firmware-mismatch"


def test_every_reason_code_shows_the_text_the_python_verdict_names(rig: Rig) -> None:
    for counter, code in enumerate(Code, start=1):
        rig.send(rig.verdict(fail(code), 1, counter))
        assert rig.host.arming_check() == (False, gate_text(fail(code)))
        assert len(rig.reason()) <= 41


def test_the_lua_mac_agrees_with_python_for_every_text_length(rig: Rig) -> None:
    """Payloads of 38 to 79 bytes: the inner hash takes one block, then two (SHA-256 padding)."""
    for n in range(1, 30):
        text = "FlightSeal: " + "abcdefghijklmnopqrstuvwxyz0123"[:n]
        verdict = Verdict(False, (Reason(Code.PARAM_PINNED, "x", PARAM_COMPONENT_PREFIX + "P"),))
        data = signed_data(VERDICT_FAIL, rig.nonce, 1, n, text.encode())
        acks = rig.send(raw_tunnel(data))
        assert [a.result for a in acks] == [ACCEPTED], (n, acks)
        assert rig.reason() == text
        assert verdict.passed is False


@pytest.mark.parametrize(("code", "text"), [(Code.PARAM_MISMATCH, "FlightSeal: param FS_THR_ENABLE"),
                                            (Code.PARAM_PINNED, "FlightSeal: pinned ARMING_CHECK")])
def test_a_parameter_reason_shows_the_parameter_name_to_the_pilot(rig: Rig, code: Code, text: str) -> None:
    name = text.rsplit(" ", 1)[1]
    verdict = Verdict(False, (Reason(code, "x", PARAM_COMPONENT_PREFIX + name),))
    rig.send(rig.verdict(verdict, 1, 1))
    assert rig.host.arming_check() == (False, text)


def test_the_longest_parameter_name_fits_the_pilot_text(rig: Rig) -> None:
    verdict = Verdict(False, (Reason(Code.PARAM_PINNED, "x", PARAM_COMPONENT_PREFIX + "ABCDEFGHIJKLMNOP"),))
    rig.send(rig.verdict(verdict, 1, 1))
    assert rig.host.arming_check() == (False, "FlightSeal: pinned ABCDEFGHIJKLMNOP")


@pytest.mark.parametrize("text", ["", "FlightSeal: ", "Arm: anything goes", "FlightSeal: x\x07", "FlightSeal: é",
                                  "FlightSeal: " + "x" * 30])
def test_a_fail_text_that_is_not_ours_or_does_not_fit_is_a_bad_verdict(rig: Rig, text: str) -> None:
    rig.send(rig.verdict(PASS, 1, 1))
    acks = rig.send(raw_tunnel(signed_data(VERDICT_FAIL, rig.nonce, 1, 2, text.encode("utf-8"))))
    assert rig.host.arming_check() == (False, "FlightSeal: bad verdict")
    assert [a.result for a in acks] == [FAILED]


def test_version_is_a_constant_in_the_file_and_announced_at_start(rig: Rig) -> None:
    assert gate_version() == 4
    assert rig.host.texts[0].text == f"FlightSeal gate v{gate_version()} running"


def test_verdict_on_another_channel_is_ignored(rig: Rig) -> None:
    assert rig.send(rig.verdict(PASS, 1, 1), channel=0) == []
    assert rig.reason() == "FlightSeal: waiting"
    assert rig.send(rig.verdict(PASS, 1, 2), channel=2) == []
    assert not rig.allowed()


@pytest.mark.parametrize("ids", [{"sysid": 255, "compid": 191}, {"sysid": 1, "compid": 190},
                                 {"sysid": 2, "compid": 191}, {"sysid": 1, "compid": 1}])
def test_verdict_from_other_ids_is_ignored(rig: Rig, ids: dict[str, int]) -> None:
    assert rig.send(rig.verdict(PASS, 1, 1, **ids)) == []
    assert rig.reason() == "FlightSeal: waiting"


def test_replayed_pass_is_ignored_and_answered_denied(rig: Rig) -> None:
    old_pass = rig.verdict(PASS, 9, 1)
    rig.send(old_pass)
    rig.send(rig.verdict(fail(Code.PARAM_MISMATCH), 9, 2))
    acks = rig.send(old_pass)
    assert rig.reason() == "FlightSeal: param-mismatch"
    assert [(a.result, a.sequence, a.gate_epoch) for a in acks] == [(DENIED, Sequence(9, 1), 9)]


def test_reordered_verdict_is_ignored(rig: Rig) -> None:
    rig.send(rig.verdict(fail(Code.SCRIPT_MISMATCH), 3, 5))
    rig.send(rig.verdict(PASS, 3, 4))
    rig.send(rig.verdict(PASS, 3, 5))
    assert rig.reason() == "FlightSeal: script-mismatch"


def test_older_epoch_is_ignored_whatever_its_counter(rig: Rig) -> None:
    rig.send(rig.verdict(fail(), 100, 1))
    rig.send(rig.verdict(PASS, 99, 2**31 - 1))
    assert not rig.allowed()
    rig.send(rig.verdict(PASS, 101, 1))
    assert rig.allowed()


def test_fail_or_lapse_while_armed_never_disarms_and_refuses_next_arming(rig: Rig) -> None:
    rig.send(rig.verdict(PASS, 1, 1))
    assert rig.allowed()
    rig.host.set_armed(True)
    rig.send(rig.verdict(fail(Code.COMPONENT_UNKNOWN), 1, 2))
    rig.advance(2 * LAPSE_MS)
    rig.send(rig.verdict(PASS, 1, 3))
    rig.advance(2 * LAPSE_MS)
    assert rig.host.armed
    assert (rig.host.disarm_requests, rig.host.arm_requests) == (0, 0)
    rig.host.set_armed(False)
    assert rig.host.arming_check() == (False, "FlightSeal: verdict lapsed")


def test_corrupted_verdict_with_bad_crc_is_ignored(rig: Rig) -> None:
    rig.send(rig.verdict(fail(), 1, 1))
    bad = bytearray(rig.verdict(PASS, 1, 2))
    bad[10 + 5 + 4] ^= 0x03  # the verdict kind (pass → fail); the CRC no longer matches
    assert rig.send(bytes(bad)) == []
    assert rig.reason() == "FlightSeal: firmware-mismatch"
    assert rig.host.running
    assert rig.send(rig.verdict(PASS, 1, 3))[0].foreign == 0  # a bad CRC is noise, not a forgery


def test_unknown_verdict_kind_or_pass_with_text_from_the_agent_blocks_and_is_answered_failed(rig: Rig) -> None:
    cases = [(VERDICT_PASS, b"FlightSeal: x"), (3, b""), (VERDICT_FAIL, b"")]
    for counter, (kind, text) in enumerate(cases, start=1):
        rig.send(rig.verdict(PASS, 1, 10 * counter))
        acks = rig.send(raw_tunnel(signed_data(kind, rig.nonce, 1, 10 * counter + 1, text)))
        assert rig.reason() == "FlightSeal: bad verdict", (kind, text)
        assert [a.result for a in acks] == [FAILED]


def test_short_misframed_or_foreign_tunnels_are_not_taken(rig: Rig) -> None:
    good = verdict_payload(VERDICT_PASS, Sequence(1, 1), "", KEY, rig.nonce)
    assert rig.send(raw_tunnel(good, payload_type=0xF5E1)) == []  # the challenge's tunnel type
    assert rig.send(raw_tunnel(good[:30])) == []
    assert rig.send(raw_tunnel(good, length=200)) == []
    assert rig.send(raw_tunnel(good + b"x")) == []  # the text length does not match the payload length
    assert rig.send(raw_tunnel(b"FSV2" + good[4:])) == []  # gate v2's verdicts
    assert rig.reason() == "FlightSeal: waiting"


def test_other_commands_and_messages_are_not_taken(rig: Rig) -> None:
    other = mavlink2.MAVLink_command_int_message(1, 1, 0, 31010, 0, 0, 4608817.0, 1.0, 0.0, 0.0, 1, 1, 0.0)
    assert rig.send(frame(other)) == []  # the verdict transport of gate v1
    hb = mavlink2.MAVLink_heartbeat_message(18, 8, 0, 0, 4, 3)
    assert rig.send(frame(hb)) == []
    assert rig.reason() == "FlightSeal: waiting"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=128), junk=st.binary(max_size=64))
def test_arbitrary_payloads_never_crash_the_gate_or_open_it(data: bytes, junk: bytes) -> None:
    rig = Rig()
    nonce = rig.learn_nonce()
    rig.host.deliver(CHANNEL, junk)
    rig.send(raw_tunnel(data))
    assert not rig.allowed()
    assert rig.host.running, rig.host.texts
    rig.send(raw_tunnel(data[:5] + nonce + data[13:]))  # even with the gate's nonce in place
    assert not rig.allowed()
    rig.send(rig.verdict(PASS, 2**31 - 1, 2**31 - 1))
    assert rig.allowed()


def test_script_error_blocks_and_the_gate_recovers_on_the_next_verdict(rig: Rig,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rig.send(rig.verdict(PASS, 1, 1))
    assert rig.allowed()

    def broken() -> None:
        raise RuntimeError("simulated binding failure")

    monkeypatch.setattr(rig.host._bindings, "mav_receive", broken)
    rig.advance(100)
    assert rig.host.arming_check() == (False, "FlightSeal: gate error")
    assert any("gate error" in t.text and t.severity == 3 for t in rig.host.texts)
    monkeypatch.undo()
    rig.send(rig.verdict(PASS, 1, 2))
    assert rig.allowed()
    assert rig.host.running


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_worst_case_runs_fit_in_two_thirds_of_the_vm_budget_the_gate_asks_for(key: bytes) -> None:
    """A full queue of longest verdicts: real ones (verify + ack) or forged (verify + the report)."""
    rig = Rig()
    rig.learn_nonce()
    rig.params["SCR_VM_I_COUNT"] = GATE_VM_I_COUNT * 2 // 3  # the gate checked it at load; the host, every run
    text = Verdict(False, (Reason(Code.PARAM_PINNED, "x", PARAM_COMPONENT_PREFIX + "ABCDEFGHIJKLMNOP"),))
    for counter in range(1, 9):
        rig.host.deliver(CHANNEL, rig.verdict(text, 1, counter, key=key), rig.now)
    rig.advance(400)  # two MACs a run: the queue of 8 takes four runs
    assert rig.host.running, rig.host.texts
    assert len(rig.acks()) == (8 if key == KEY else 0)
    assert rig.send(rig.verdict(PASS, 2, 1))[0].foreign == (0 if key == KEY else 8)


def test_millis_wraparound_keeps_lapse_timing() -> None:
    rig = Rig(start_ms=2**32 - 1000)
    rig.learn_nonce()
    rig.send(rig.verdict(PASS, 1, 1))
    rig.advance(2500)  # across the 32-bit wrap of millis()
    assert rig.allowed()
    rig.advance(LAPSE_MS)
    assert rig.reason() == "FlightSeal: verdict lapsed"


def test_without_a_free_aux_auth_slot_arming_stays_refused() -> None:
    taker = b"local id = arming:get_aux_auth_id() arming:set_aux_auth_passed(id) return"
    host = LuaGateHost(params={"SCR_VM_I_COUNT": GATE_VM_I_COUNT}, files={FC_KEY_NAME: KEY})
    for i in range(3):
        host.add_script(taker, f"taker{i}.lua")
    host.add_script(GATE_SCRIPT_PATH)
    host.tick(0)
    assert host.arming_check() == (False, "Too many auxiliary authorisers")
    assert any("no aux auth slot" in t.text for t in host.texts)


def test_the_key_on_a_boards_sd_card_comes_first() -> None:
    host = LuaGateHost(GATE_SCRIPT_PATH, params={"SCR_VM_I_COUNT": GATE_VM_I_COUNT},
                       files={"APM/" + FC_KEY_NAME: KEY, FC_KEY_NAME: OTHER_KEY})
    host.tick(0)
    probe = frame(encode_verdict(PASS, Sequence(1, 1), KEY))
    host.deliver(CHANNEL, probe, 0)
    host.tick(100)
    out = [m for _c, f in host.drain_outgoing() for m in mavlink2.MAVLink(None).parse_buffer(f) or []]
    acks = [decode_ack(m, KEY) for m in out]
    assert [a.result for a in acks if a is not None] == [STALE]


def test_a_full_queue_of_bad_crc_frames_on_the_agents_channel_fits_the_budget_and_drains() -> None:
    rig = Rig()
    rig.learn_nonce()
    rig.params["SCR_VM_I_COUNT"] = GATE_VM_I_COUNT * 2 // 3
    good = verdict_payload(VERDICT_PASS, Sequence(1, 1), "", KEY, rig.nonce)
    bad = bytearray(raw_tunnel(good))
    bad[-1] ^= 0xFF  # the CRC
    for _ in range(25):
        rig.host.deliver(CHANNEL, bytes(bad), rig.now)
    rig.advance(300)  # twelve CRC checks a run
    assert rig.host.running, rig.host.texts
    assert [a.result for a in rig.send(rig.verdict(PASS, 1, 2))] == [ACCEPTED]
    assert rig.allowed()


def test_the_agents_verdict_behind_a_full_queue_of_other_links_frames_is_taken_in_the_same_run(rig: Rig) -> None:
    junk = rig.verdict(PASS, 9, 9, key=OTHER_KEY)
    for _ in range(24):  # the radio's frames: the queue holds 25
        rig.host.deliver(2, junk, rig.now)
    acks = rig.send(rig.verdict(PASS, 1, 1))
    assert [a.result for a in acks] == [ACCEPTED] and rig.allowed()
