"""LuaGateHost behaves as ArduPilot's scripting does where the gate's safety depends on it."""

from __future__ import annotations

import struct
from pathlib import Path

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from sim.vfc.lua_host import MESSAGE_T_SIZE, LuaGateHost


def heartbeat(seq: int = 0, sysid: int = 1, compid: int = 191, status: int = 4, version: int = 3) -> bytes:
    mav = mavlink2.MAVLink(None, srcSystem=sysid, srcComponent=compid)
    mav.seq = seq
    return bytes(mavlink2.MAVLink_heartbeat_message(18, 8, 0, 0, status, version).pack(mav))


def texts(host: LuaGateHost) -> list[str]:
    return [t.text for t in host.texts]


def test_script_error_stops_it_and_leaves_aux_auth_as_last_set() -> None:
    host = LuaGateHost(b"""
local id = arming:get_aux_auth_id()
arming:set_aux_auth_passed(id)
local function update() error("boom") end
return update, 100
""", name="fragile.lua")
    host.tick(0)
    host.tick(100)
    assert host.running == []
    assert texts(host) == ["Lua: ./scripts/fragile.lua:4: boom"]
    assert host.texts[0].severity == 2
    assert host.arming_check() == (True, "")  # why the gate must fail closed by itself


def test_instruction_overrun_stops_the_script_even_inside_pcall() -> None:
    host = LuaGateHost(b"""
local id = arming:get_aux_auth_id()
arming:set_aux_auth_failed(id, "blocked")
local function spin() while true do end end
local function update()
  if not pcall(spin) then arming:set_aux_auth_passed(id) end
  return update, 100
end
return update, 100
""", name="spin.lua", vm_instructions=2000)
    host.tick(0)
    host.tick(100)
    assert host.running == []
    assert texts(host) == ["Lua: ./scripts/spin.lua exceeded time limit"]
    assert host.arming_check() == (False, "blocked")


def test_scripts_reschedule_by_their_returned_delay_and_end_when_returning_nothing() -> None:
    host = LuaGateHost(b"""
local runs = 0
local function update()
  runs = runs + 1
  gcs:send_text(6, "run " .. runs .. " at " .. millis():toint())
  if runs == 4 then return end
  return update, 250
end
return update, 250
""", name="count.lua")
    for now in range(0, 2001, 50):
        host.tick(now)
    assert texts(host) == ["run 1 at 250", "run 2 at 500", "run 3 at 750", "run 4 at 1000"]
    assert host.running == []


def test_bad_return_values_end_the_script_with_arduPilots_message() -> None:
    host = LuaGateHost(b"return 1, 2, 3", name="three.lua")
    host.add_script(b"return 100, 100", name="nofn.lua")
    host.tick(0)
    assert texts(host) == ["Lua: ./scripts/three.lua returned bad result count (3)",
                           "Lua: ./scripts/nofn.lua did not return a function"]


def test_syntax_error_is_reported_and_nothing_runs() -> None:
    host = LuaGateHost(b"local = 1", name="broken.lua")
    host.tick(0)
    assert host.running == []
    assert texts(host)[0].startswith("Lua: Error: ./scripts/broken.lua:1:")


def test_sandbox_lacks_what_arduPilot_leaves_out() -> None:
    host = LuaGateHost(b"print('x')", name="p.lua")
    host.add_script(b"return os.time()", name="os.lua")
    host.add_script(b"return rawget(_G, 'x')", name="raw.lua")
    host.tick(0)
    assert len(host.texts) == 3
    assert all("attempt to" in t for t in texts(host))


def test_io_reads_only_inside_the_fcs_directory(tmp_path: Path) -> None:
    (tmp_path / "APM").mkdir()
    (tmp_path / "APM" / "k.bin").write_bytes(b"\x00secret")
    (tmp_path.parent / "outside.txt").write_bytes(b"no")
    host = LuaGateHost(b"""
local f = io.open("APM/k.bin", "rb")
local a, b = f:read(3), f:read("a")
f:close()
gcs:send_text(6, #a .. " " .. b .. " " .. tostring(io.open("../outside.txt")) .. " "
  .. tostring(io.open("/APM/k.bin") ~= nil) .. " " .. tostring(io.open("APM/k.bin", "w")))
return""", name="io.lua", files=tmp_path)
    host.tick(0)
    assert texts(host) == ["3 cret nil true nil"]


def test_receive_chan_gives_the_mavlink_message_t_zero_filled_to_the_message_length() -> None:
    host = LuaGateHost(b"""
mavlink:init(4, 1)
mavlink:register_rx_msgid(0)
local function update()
  local msg, chan, ts = mavlink:receive_chan()
  if msg then
    local magic, len, _, _, seq, sysid, compid, msgid = string.unpack("<BBBBBBBI3", msg, 3)
    local tail = string.sub(msg, 13 + len, 12 + 9)
    gcs:send_text(6, table.concat({#msg, magic, len, seq, sysid, compid, msgid, chan, ts:toint(),
                                   tail == string.rep("\\0", #tail) and "zero" or "stale"}, " "))
  end
  return update, 10
end
return update, 10
""", name="rx.lua")
    host.tick(0)
    full = heartbeat(seq=6)
    short = heartbeat(seq=7, status=0, version=0)
    assert short[1] < full[1] == 9  # MAVLink2 dropped the trailing zeros
    assert host.deliver(3, full, now_ms=5)
    host.tick(10)
    assert host.deliver(3, short, now_ms=15)
    host.tick(20)
    assert texts(host) == [f"{MESSAGE_T_SIZE} 253 9 6 1 191 0 3 5 zero",
                           f"{MESSAGE_T_SIZE} 253 {short[1]} 7 1 191 0 3 15 zero"]


def test_frames_with_a_bad_crc_reach_scripts_with_the_received_ck() -> None:
    host = LuaGateHost(b"""
mavlink:init(4, 1)
mavlink:register_rx_msgid(0)
local function update()
  local msg = mavlink:receive_chan()
  if msg then
    gcs:send_text(6, string.unpack("<I2", msg, 1) == string.unpack("<I2", msg, 277) and "crc ok" or "crc bad")
  end
  return update, 10
end
return update, 10
""", name="crc.lua")
    host.tick(0)
    good = heartbeat()
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    assert host.deliver(1, good)
    host.tick(10)
    assert host.deliver(1, bytes(bad))
    host.tick(20)
    assert texts(host) == ["crc ok", "crc bad"]


def test_rx_queue_is_bounded_and_drops_the_newest() -> None:
    host = LuaGateHost(b"mavlink:init(2, 1) mavlink:register_rx_msgid(0) return", name="q.lua")
    host.tick(0)
    assert [host.deliver(1, heartbeat(seq=i)) for i in range(3)] == [True, True, False]
    assert [host.deliver(1, heartbeat(seq=i)) for i in range(3)] == [False, False, False]


def test_nothing_is_queued_before_init_or_for_unregistered_ids() -> None:
    host = LuaGateHost()
    assert not host.deliver(1, heartbeat())
    host.add_script(b"mavlink:init(2, 1) mavlink:register_rx_msgid(75) return", name="r.lua")
    host.tick(0)
    assert not host.deliver(1, heartbeat())


def test_second_init_clears_every_registration() -> None:
    host = LuaGateHost(b"mavlink:init(4, 2) mavlink:register_rx_msgid(0) return", name="a.lua")
    host.add_script(b"mavlink:init(4, 1) return", name="b.lua")
    host.tick(0)
    assert not host.deliver(1, heartbeat())


def test_send_chan_frames_the_payload_as_mavlink2_from_the_fc() -> None:
    host = LuaGateHost(b"""
mavlink:send_chan(2, 77, string.pack("<I2BBi4BB", 31010, 0, 1, 5, 1, 191))
return
""", name="tx.lua", sysid=1, compid=1)
    host.tick(0)
    out = host.drain_outgoing()
    assert [chan for chan, _ in out] == [2]
    msgs = mavlink2.MAVLink(None).parse_buffer(out[0][1])
    assert msgs is not None and len(msgs) == 1
    ack = msgs[0]
    assert (ack.get_srcSystem(), ack.get_srcComponent(), ack.command, ack.result_param2) == (1, 1, 31010, 5)


def test_send_chan_refuses_a_payload_shorter_than_the_message() -> None:
    host = LuaGateHost(b"mavlink:send_chan(1, 77, string.pack('<I2B', 31010, 0)) return", name="short.lua")
    host.tick(0)
    assert host.drain_outgoing() == []
    assert "send_chan reads 10" in texts(host)[0]


def test_aux_auth_reports_waiting_slots_and_the_lowest_failure() -> None:
    host = LuaGateHost(b"local id = arming:get_aux_auth_id() return", name="silent.lua")
    host.tick(0)
    assert host.arming_check() == (False, "Waiting for auxiliary authorisation")
    host.add_script(b"local id = arming:get_aux_auth_id() arming:set_aux_auth_failed(id, 'second') return",
                    name="second.lua")
    host.tick(1)
    assert host.arming_check() == (False, "second")
    host.aux.set_failed(0, "first")
    assert host.arming_check() == (False, "first")


def test_millis_toint_wraps_like_arduPilots_32_bit_integers() -> None:
    host = LuaGateHost(b"gcs:send_text(6, tostring(millis():toint())) return", name="m.lua", now_ms=2**31 + 5)
    host.tick(2**31 + 5)
    assert texts(host) == [str(2**31 + 5 - 2**32)]


def test_block_command_is_reported_to_the_fc() -> None:
    host = LuaGateHost(b"mavlink:block_command(31010) return", name="b.lua")
    assert not host.is_handling_command(31010)
    host.tick(0)
    assert host.is_handling_command(31010)
    assert not host.is_handling_command(400)
    host.restart_scripting()
    assert not host.is_handling_command(31010)


def test_payload_layout_matches_pymavlink() -> None:
    """COMMAND_INT's wire order, which the gate unpacks by hand."""
    msg = mavlink2.MAVLink_command_int_message(1, 1, 0, 31010, 0, 0, 1.0, 2.0, 3.0, 4.0, 5, 6, 7.0)
    payload = msg.pack(mavlink2.MAVLink(None))[10:-2]
    payload += bytes(35 - len(payload))
    assert struct.unpack_from("<ffffiifH", payload) == (1.0, 2.0, 3.0, 4.0, 5, 6, 7.0, 31010)
