"""The virtual FC's scripting against what SITL was recorded doing (tests/data/sitl-scripting):
script checksums, MAV_CMD_SCRIPTING stop and restart, a script error, SCR_ENABLE=0 and a removed
gate, each with ArduPilot's own arming texts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.gate.client import gate_script, gate_version
from agent.mavlink.ftpwire import crc32_ardupilot
from agent.mavlink.statustext import StatusTexts
from sim.scenarios.rig import GATE_KEY, Gcs
from sim.vfc import VfcConfig, VirtualFC
from sim.vfc.lua_host import CHECKSUM_MASK, LuaScriptingAuthority

DATA = json.loads((Path(__file__).parent / "data" / "sitl-scripting" / "results.json").read_text())
EXPERIMENTS = {e["title"].split(" ", 1)[0].rstrip("."): e for e in (
    DATA["experiments"] if isinstance(DATA["experiments"], list) else DATA["experiments"].values())}
SOURCES = {name: text.encode() for name, text in DATA["meta"]["scripts"].items() if name != "flightseal_gate.lua"}
RECORDED_CRC = {name: int(v["crc32_hex"], 16) for name, v in DATA["crc_rule"]["per_script_crc32"].items()}
GATE_CRC = crc32_ardupilot(gate_script())
SCRIPTING = 42701


def recorded_arming(exp: str, label: str) -> tuple[int, list[str]]:
    a = EXPERIMENTS[exp]["arming"][label]
    return a["ack_result"], [t["text"] for t in a["texts"] if t["text"].startswith("Arm")]


def mask(value: int) -> str:
    """The recorded texts name the running gate's checksum; ours may differ if the gate changed since."""
    return f"0x{value & CHECKSUM_MASK:X}"


class Station:
    """A GCS on the vFC's SERIAL0 that sends commands and reads what the FC answers."""

    def __init__(self, fc: VirtualFC) -> None:
        self.fc = fc
        self.gcs = Gcs(fc.url(0))

    def command(self, command: int, *params: float, wait: float = 0.6) -> tuple[int | None, list[str]]:
        conn: Any = self.gcs.conn
        values = [*params, 0, 0, 0, 0, 0, 0, 0][:7]
        conn.mav.command_long_send(1, 1, command, 0, *values)
        result, chunks = None, StatusTexts()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            m = conn.recv_match(type=["COMMAND_ACK", "STATUSTEXT"], blocking=True, timeout=0.1)
            if m is None:
                continue
            if m.get_type() == "COMMAND_ACK" and m.command == command:
                result = int(m.result)
            elif m.get_type() == "STATUSTEXT":
                chunks.add(m)
        return result, chunks.texts

    def arm(self) -> tuple[int | None, list[str]]:
        result, texts = self.command(400, 1)
        if result == 0:
            self.command(400, 0, 21196)
        return result, [t for t in texts if t.startswith("Arm")] or (["Arming motors"] if result == 0 else [])


def protect(fc: VirtualFC, value: int = GATE_CRC & CHECKSUM_MASK) -> None:
    """Both script checksums set, as `gate install` leaves them."""
    fc.set_param("SCR_LD_CHECKSUM", value)
    fc.set_param("SCR_RUN_CHECKSUM", value)


def start(scripts: dict[str, bytes], **params: float) -> VirtualFC:
    return VirtualFC(VfcConfig(scripts=scripts, standby_delay=0.1, params=dict(params), gate_key=GATE_KEY),
                     authority=LuaScriptingAuthority()).start()


@pytest.fixture
def gate_fc() -> Iterator[tuple[VirtualFC, Station]]:
    fc = start({"flightseal_gate.lua": gate_script()})
    st = Station(fc)
    try:
        yield fc, st
    finally:
        st.gcs.close()
        fc.stop()


def test_ardupilot_script_crc_matches_the_recorded_files() -> None:
    for name, source in SOURCES.items():
        assert crc32_ardupilot(source) == RECORDED_CRC[name], name
    assert crc32_ardupilot(b"123456789") == int(DATA["crc_rule"]["check_value_123456789"], 16)


def test_debug_opts_bit_5_saves_the_xor_of_the_loaded_scripts_as_recorded() -> None:
    fc = start({"always_pass.lua": SOURCES["always_pass.lua"], "trivial.lua": SOURCES["trivial.lua"]})
    try:
        fc.set_param("SCR_DEBUG_OPTS", 32)
        assert fc.wait_for(lambda: fc.params.get("SCR_DEBUG_OPTS").value == 0, 3.0)  # type: ignore[union-attr]
        want = (RECORDED_CRC["always_pass.lua"] ^ RECORDED_CRC["trivial.lua"]) & CHECKSUM_MASK
        assert fc.get_param("SCR_LD_CHECKSUM") == fc.get_param("SCR_RUN_CHECKSUM") == want
        assert (3, "Scripting: saved checksums") in fc.texts
    finally:
        fc.stop()
    exp1c = EXPERIMENTS["1c"]["params_read"]
    saved = next(v for k, v in exp1c.items() if "after" in k)
    assert int(saved["SCR_LD_CHECKSUM"]) == (want ^ RECORDED_CRC["flightseal_gate.lua"]) & CHECKSUM_MASK


def test_wrong_checksums_refuse_arming_with_ardupilots_text(gate_fc: tuple[VirtualFC, Station]) -> None:
    fc, st = gate_fc
    right = GATE_CRC & CHECKSUM_MASK
    fc.set_param("SCR_LD_CHECKSUM", right)
    fc.set_param("SCR_RUN_CHECKSUM", right)
    assert st.arm() == recorded_arming("2", "arm_correct")
    fc.set_param("SCR_RUN_CHECKSUM", right ^ 1)
    result, texts = recorded_arming("2", "arm_run_wrong")
    assert st.arm() == (result, [t.replace("0x3272DD", mask(GATE_CRC)) for t in texts])
    fc.set_param("SCR_LD_CHECKSUM", right ^ 1)
    result, texts = recorded_arming("2", "arm_both_wrong")
    assert st.arm() == (result, [t.replace("0x3272DD", mask(GATE_CRC)) for t in texts])
    fc.set_param("SCR_LD_CHECKSUM", right | 0x800000)  # bits above the 23-bit mask are ignored
    fc.set_param("SCR_RUN_CHECKSUM", right)
    assert st.arm() == recorded_arming("2", "arm_bit23_set")


def test_stop_and_restart_as_recorded(gate_fc: tuple[VirtualFC, Station]) -> None:
    fc, st = gate_fc
    commands = EXPERIMENTS["3"]["commands"]
    protect(fc)
    result, texts = st.command(SCRIPTING, 2)
    assert (result, texts[:1]) == (commands["stop"]["ack_result"], [t["text"] for t in commands["stop"]["statustexts"]])
    assert st.arm() == recorded_arming("3", "arm_after_stop")
    result, texts = st.command(SCRIPTING, 3)
    assert result == commands["restart"]["ack_result"]
    recorded = [t["text"] for t in commands["restart"]["statustexts"][:2]]  # recorded with gate v2
    assert texts[:2] == [t.replace("gate v2 ", f"gate v{gate_version()} ") for t in recorded]
    assert st.arm() == recorded_arming("3", "arm_after_restart"), "the loaded checksum is XORed again"
    st.command(SCRIPTING, 3)
    assert st.arm() == recorded_arming("3", "arm_after_restart2")
    assert st.command(SCRIPTING, 0)[0] == commands["repl_start"]["ack_result"]
    assert st.command(SCRIPTING, 4)[0] == commands["param1_4"]["ack_result"]


def test_a_stop_keeps_every_slot_as_it_was_as_recorded() -> None:
    fc = start({"always_pass.lua": SOURCES["always_pass.lua"]})
    st = Station(fc)
    try:
        assert st.arm() == recorded_arming("3c", "ready")
        st.command(SCRIPTING, 2)
        assert st.arm() == recorded_arming("3c", "arm_after_stop"), "a passed slot survives a stop"
        fc.set_param("SCR_RUN_CHECKSUM", RECORDED_CRC["always_pass.lua"] & CHECKSUM_MASK)
        assert st.arm() == recorded_arming("3c", "arm_after_stop_checksums_set")
    finally:
        st.gcs.close()
        fc.stop()


def test_debug_opts_bit_4_turns_the_scripting_check_off_as_recorded(gate_fc: tuple[VirtualFC, Station]) -> None:
    fc, st = gate_fc
    fc.set_param("SCR_RUN_CHECKSUM", GATE_CRC & CHECKSUM_MASK)
    st.command(SCRIPTING, 2)
    assert st.arm() == recorded_arming("4", "arm_after_stop")
    fc.set_param("SCR_DEBUG_OPTS", 16)
    assert st.arm() == recorded_arming("4", "arm_bit4")


def test_a_script_error_refuses_arming_with_its_message_as_recorded() -> None:
    boom = SOURCES["boom.lua"].replace(b"30000", b"200")  # the recording waited 30 s for the same error
    fc = start({"flightseal_gate.lua": gate_script(), "boom.lua": boom})
    st = Station(fc)
    try:
        time.sleep(0.8)
        assert st.arm() == recorded_arming("5", "arm_after_error")
        assert (2, "Lua: ./scripts/boom.lua:2: boom") in fc.texts
    finally:
        st.gcs.close()
        fc.stop()


def test_scripting_disabled_after_a_reboot_arms_even_with_checksums_as_recorded(
        gate_fc: tuple[VirtualFC, Station]) -> None:
    fc, st = gate_fc
    protect(fc)
    fc.set_param("SCR_ENABLE", 0)
    assert fc.wait_for(lambda: (2, "Scripting: stopped") in fc.texts, 2.0), "disabling stops scripting at once"
    result, texts = recorded_arming("6", "arm_enable0_before_reboot")
    assert st.arm() == (result, texts)
    fc.reboot()
    time.sleep(1.5)
    st2 = Station(fc)
    try:
        assert st2.arm() == recorded_arming("6", "ready_after_reboot")
    finally:
        st2.gcs.close()


def test_a_deleted_gate_refuses_arming_by_the_loaded_checksum_as_recorded(tmp_path: Path) -> None:
    fc = start({"flightseal_gate.lua": gate_script()})
    try:
        protect(fc)
        (fc.scripts_dir / "flightseal_gate.lua").unlink()
        fc.reboot()
        time.sleep(1.5)
        st = Station(fc)
        try:
            assert st.arm() == recorded_arming("7", "arm_after_reboot")
        finally:
            st.gcs.close()
    finally:
        fc.stop()
