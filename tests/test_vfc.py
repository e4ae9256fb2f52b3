"""The virtual FC behaves as the recorded ArduCopter 4.7.0-dev SITL does (see /work/shared/sitl-captures).

Each test names the SITL behaviour it reproduces; tests/test_sitl.py runs the same scenarios
against real SITL when FLIGHTSEAL_SITL_BINARY is set.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agent.mavlink.ftpwire import FtpErr, FtpPacket, Op, crc32_ardupilot
from sim.vfc import AllowArming, DenyArming, VfcConfig, VirtualFC
from sim.vfc.hooks import ArmingAuthority, VehicleBus
from tests.vfc_fixtures import IDLE_LUA, TICK_LUA, RawClient

FAST = {"standby_delay": 0.1}


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    with VirtualFC(VfcConfig(scripts={"tick.lua": TICK_LUA, "idle.lua": IDLE_LUA}, **FAST)) as vfc:
        yield vfc


@pytest.fixture
def client(fc: VirtualFC) -> Iterator[RawClient]:
    c = RawClient(fc.ports[1])
    assert c.recv(["HEARTBEAT"], 3) is not None
    c.heartbeat()
    assert fc.wait_for(lambda: not fc.booting, 2)  # as SITL, the parameter count settles once booted
    yield c
    c.close()


def test_nothing_is_sent_before_the_first_heartbeat() -> None:
    start = time.monotonic()
    with VirtualFC(VfcConfig(boot_delay=0.4)) as vfc:
        c = RawClient(vfc.ports[1])
        first = c.recv(None, 3)
        assert first is not None and first.get_type() == "HEARTBEAT"
        assert c.first_bytes_at is not None and c.first_bytes_at - start >= 0.35
        c.close()


def test_heartbeat_says_quadrotor_ardupilot_booting_then_standby() -> None:
    with VirtualFC(VfcConfig(**FAST)) as vfc:
        c = RawClient(vfc.ports[1])
        boot = c.recv(["HEARTBEAT"], 2)
        assert (boot.type, boot.autopilot, boot.base_mode, boot.system_status) == (2, 3, 89, 1)
        standby = c.recv(["HEARTBEAT"], 3, lambda m: m.system_status == 3)
        assert standby is not None and standby.base_mode == 81 and standby.get_srcComponent() == 1
        c.close()


def test_while_booting_the_parameter_count_leaves_out_scripting_as_sitl_did() -> None:
    with VirtualFC(VfcConfig(standby_delay=0.5)) as vfc:
        c = RawClient(vfc.ports[1])
        c.recv(["HEARTBEAT"], 2)
        c.send(c.mav.param_request_read_encode(1, 1, b"", 0))
        early = c.recv(["PARAM_VALUE"], 2)
        assert early.param_count == 1354 and vfc.booting
        assert vfc.wait_for(lambda: not vfc.booting, 2)
        c.send(c.mav.param_request_read_encode(1, 1, b"", 0))
        assert c.recv(["PARAM_VALUE"], 2).param_count == 1368
        c.close()


def test_autopilot_version_follows_its_ack_with_the_sitl_fields(client: RawClient) -> None:
    client.command(512, 148)
    first = client.recv(["COMMAND_ACK", "AUTOPILOT_VERSION"], 2)
    second = client.recv(["COMMAND_ACK", "AUTOPILOT_VERSION"], 2)
    assert first.get_type() == "COMMAND_ACK" and first.result == 0 and first.command == 512
    assert (first.target_system, first.target_component) == (1, 191)
    assert second.get_type() == "AUTOPILOT_VERSION"
    assert second.flight_sw_version == 0x04070000 and second.capabilities == 0xFBEF
    assert bytes(second.flight_custom_version) == b"2598e9d4"
    assert second.uid == 0 and second.board_version == 0 and any(second.uid2)


def test_unknown_message_request_fails_and_unknown_command_is_unsupported(client: RawClient) -> None:
    client.command(512, 9999)
    assert client.recv(["COMMAND_ACK"], 2).result == 4
    client.command(31999)
    assert client.recv(["COMMAND_ACK"], 2).result == 3


def test_param_list_sends_the_banner_then_every_parameter_in_index_order(client: RawClient) -> None:
    client.collect(0.1)  # the boot texts
    client.send(client.mav.param_request_list_encode(1, 1))
    msgs = client.collect(1.0, ["STATUSTEXT", "PARAM_VALUE"])
    texts = [m.text for m in msgs if m.get_type() == "STATUSTEXT"]
    assert texts[:3] == ["ArduCopter V4.7.0-dev (2598e9d4)", texts[1], "Frame: QUAD/PLUS"]
    first_param = next(i for i, m in enumerate(msgs) if m.get_type() == "PARAM_VALUE")
    assert [m.get_type() for m in msgs[:first_param]].count("STATUSTEXT") >= 3
    listed = [m for m in msgs if m.get_type() == "PARAM_VALUE" and m.param_index != 0xFFFF]
    assert [m.param_index for m in listed] == list(range(1368))
    assert listed[0].param_id == "FORMAT_VERSION" and listed[0].param_value == 120.0 and listed[0].param_type == 4
    assert all(m.param_count == 1368 for m in listed)


def test_without_scripting_the_scr_parameters_are_hidden() -> None:
    with VirtualFC(VfcConfig(scripting=False, **FAST)) as vfc:
        assert len(vfc.params) == 1354 and vfc.get_param("SCR_ENABLE") == 0
        assert vfc.get_param("SCR_HEAP_SIZE") is None


def test_param_read_and_set_answer_as_sitl(client: RawClient) -> None:
    client.send(client.mav.param_request_read_encode(1, 1, b"FRAME_CLASS", -1))
    by_name = client.recv(["PARAM_VALUE"], 2, lambda m: m.param_id == "FRAME_CLASS")
    assert by_name.param_index == 0xFFFF and by_name.param_type == 2
    client.send(client.mav.param_request_read_encode(1, 1, b"", 5))
    assert client.recv(["PARAM_VALUE"], 2, lambda m: m.param_index == 5) is not None
    client.send(client.mav.param_set_encode(1, 1, b"RTL_ALT", 2000.0, 6))
    echo = client.recv(["PARAM_VALUE"], 2, lambda m: m.param_id == "RTL_ALT")
    assert echo.param_value == 2000.0 and echo.param_index == 0xFFFF and echo.param_type == 6
    client.send(client.mav.param_request_read_encode(1, 1, b"NO_SUCH_PARAM", -1))
    client.send(client.mav.param_set_encode(1, 1, b"NO_SUCH_PARAM", 1.0, 9))
    assert client.recv(["PARAM_VALUE"], 0.3, lambda m: m.param_id == "NO_SUCH_PARAM") is None


def _ftp(client: RawClient, op: int, path: str = "", seq: int | None = None, session: int = 0, offset: int = 0,
         size: int | None = None) -> FtpPacket:
    """One request, one reply. Sequence numbers advance by 2 unless given, as a client's do: reusing
    one makes ArduPilot resend its last reply."""
    if seq is None:
        client.ftp_seq += 2
        seq = client.ftp_seq
    data = path.encode()
    client.ftp(FtpPacket(seq, session, op, len(data) if size is None else size, offset=offset, data=data))
    reply = client.ftp_reply()
    assert reply is not None
    return reply


def test_ftp_listing_uses_ardupilots_entry_format_and_ends_with_eof(client: RawClient) -> None:
    reply = _ftp(client, Op.LIST_DIRECTORY, "scripts", seq=7)
    assert reply.opcode == Op.ACK and reply.seq == 8 and reply.req_opcode == Op.LIST_DIRECTORY
    assert reply.body == b"D.\0\0D..\0\0Fidle.lua\t179\0\0Ftick.lua\t140\0\0"
    assert reply.size == 39  # as in the capture
    eof = _ftp(client, Op.LIST_DIRECTORY, "scripts", seq=8, offset=4)
    assert eof.opcode == Op.NAK and eof.body == bytes([FtpErr.EOF]) and eof.offset == 4
    root = _ftp(client, Op.LIST_DIRECTORY, "/", seq=9)
    names = [e for e in root.body.split(b"\0") if e]
    assert set(names) >= {b"D.", b"D..", b"Dscripts", b"D@ROMFS", b"D@SYS"}
    assert all(n.startswith(b"D") for n in names)  # SITL's root listing shows directories only


def test_ftp_open_reports_sizes_like_sitl(client: RawClient, fc: VirtualFC) -> None:
    sizes = {}
    for session, path in enumerate(("scripts/tick.lua", "@SYS/uarts.txt", "@PARAM/param.pck")):
        reply = _ftp(client, Op.OPEN_FILE_RO, path, session=session)
        assert reply.opcode == Op.ACK and reply.size == 4
        sizes[path] = int.from_bytes(reply.body, "little")
        _ftp(client, Op.TERMINATE_SESSION, session=session)
    assert sizes == {"scripts/tick.lua": 140, "@SYS/uarts.txt": 100000, "@PARAM/param.pck": 12 * 1368}


def test_ftp_burst_read_ends_with_burst_complete_then_eof_nak(client: RawClient) -> None:
    assert _ftp(client, Op.OPEN_FILE_RO, "scripts/tick.lua", seq=9).seq == 10
    client.ftp(FtpPacket(10, 0, Op.BURST_READ_FILE, 80))
    packets = [client.ftp_reply() for _ in range(3)]
    assert [(p.seq, p.opcode, p.offset, p.size, p.burst_complete) for p in packets if p] == [
        (11, Op.ACK, 0, 80, 0), (12, Op.ACK, 80, 60, 1), (13, Op.NAK, 140, 1, 1)]
    assert packets[2].body == bytes([FtpErr.EOF])
    assert packets[0].body + packets[1].body == TICK_LUA


def test_ftp_not_found_for_missing_file_flash_without_image_and_param_listing(client: RawClient) -> None:
    for op, path in ((Op.OPEN_FILE_RO, "scripts/missing.lua"), (Op.OPEN_FILE_RO, "@SYS/flash.bin"),
                     (Op.LIST_DIRECTORY, "@PARAM")):
        reply = _ftp(client, op, path)
        assert reply.opcode == Op.NAK and reply.size == 1 and reply.body == bytes([FtpErr.FILE_NOT_FOUND]), path


def test_ftp_crc32_is_ardupilots_crc(client: RawClient) -> None:
    reply = _ftp(client, Op.CALC_FILE_CRC32, "scripts/tick.lua")
    assert int.from_bytes(reply.body, "little") == 0xD57ED916 == crc32_ardupilot(TICK_LUA)


def test_ftp_param_pck_refuses_a_second_read_size(client: RawClient) -> None:
    _ftp(client, Op.OPEN_FILE_RO, "@PARAM/param.pck", session=3)
    first = _ftp(client, Op.READ_FILE, session=3, size=80)
    assert first.opcode == Op.ACK and first.size == 80
    other = _ftp(client, Op.READ_FILE, session=3, size=100, offset=80)
    assert other.opcode == Op.NAK and other.body == bytes([FtpErr.FAIL_ERRNO, 22])


def test_ftp_one_open_file_across_sessions(client: RawClient) -> None:
    _ftp(client, Op.OPEN_FILE_RO, "scripts/tick.lua", session=1)
    assert _ftp(client, Op.OPEN_FILE_RO, "scripts/idle.lua", session=1).body == bytes([FtpErr.FAIL])
    assert _ftp(client, Op.READ_FILE, session=2, size=80).body == bytes([FtpErr.INVALID_SESSION])
    assert _ftp(client, Op.TERMINATE_SESSION, session=1).opcode == Op.ACK
    assert _ftp(client, Op.OPEN_FILE_RO, "scripts/idle.lua", session=2).opcode == Op.ACK


def test_ftp_repeated_request_gets_the_same_reply_again(client: RawClient, fc: VirtualFC) -> None:
    first = _ftp(client, Op.CALC_FILE_CRC32, "scripts/tick.lua", seq=40)
    (fc.scripts_dir / "tick.lua").write_bytes(b"changed")
    again = _ftp(client, Op.CALC_FILE_CRC32, "scripts/tick.lua", seq=40)
    assert again.body == first.body and again.seq == 41


def test_statustext_goes_only_to_channels_heard_from(fc: VirtualFC) -> None:
    heard, silent = RawClient(fc.ports[1]), RawClient(fc.ports[0], sysid=255, compid=190)
    assert silent.recv(["HEARTBEAT"], 2) is not None
    heard.heartbeat()
    heard.send(heard.mav.param_request_list_encode(1, 1))
    assert heard.recv(["STATUSTEXT"], 2) is not None
    assert silent.recv(["STATUSTEXT"], 0.5) is None
    heard.close()
    silent.close()


def test_reboot_acks_then_closes_then_boots_again(fc: VirtualFC, client: RawClient) -> None:
    client.command(246, 1)
    assert client.recv(["COMMAND_ACK"], 2).result == 0
    start = time.monotonic()
    while not client.closed and time.monotonic() - start < 2:
        client.recv(None, 0.05)
    assert client.closed and time.monotonic() - start >= 0.1
    again = RawClient(fc.ports[1], timeout=3)
    hb = again.recv(["HEARTBEAT"], 3)
    assert hb is not None and hb.get_seq() == 0 and hb.system_status == 1
    assert again.recv(["STATUSTEXT"], 0.4) is None  # not heard from since the reboot
    assert fc.boots == 2
    again.close()


def test_refused_arm_acks_failed_then_says_why() -> None:
    with VirtualFC(VfcConfig(**FAST), authority=DenyArming()) as vfc:
        c = RawClient(vfc.ports[1])
        c.recv(["HEARTBEAT"], 2)
        c.heartbeat()
        c.command(400, 1)
        ack = c.recv(["COMMAND_ACK", "STATUSTEXT"], 2, lambda m: m.get_type() == "COMMAND_ACK" or
                     m.text.startswith("Arm"))
        text = c.recv(["STATUSTEXT"], 2, lambda m: m.text.startswith("Arm"))
        assert ack.get_type() == "COMMAND_ACK" and ack.command == 400 and ack.result == 4
        assert text.text == "Arm: FlightSeal: waiting" and text.severity == 2
        assert not vfc.armed
        c.close()


def test_prearm_text_repeats_every_period_and_not_before() -> None:
    config = VfcConfig(prearm_period=0.4, prearm_check_period=0.1, **FAST)
    with VirtualFC(config, authority=DenyArming("FlightSeal: stale")) as vfc:
        c = RawClient(vfc.ports[1])
        c.recv(["HEARTBEAT"], 2)
        c.heartbeat()
        start = time.monotonic()
        first = c.recv(["STATUSTEXT"], 2, lambda m: m.text.startswith("PreArm"))
        assert first.text == "PreArm: FlightSeal: stale" and first.severity == 2
        assert time.monotonic() - start >= 0.2
        assert c.recv(["STATUSTEXT"], 1.0, lambda m: m.text.startswith("PreArm")) is not None
        c.close()


def test_arm_allowed_without_a_gate_and_heartbeat_shows_it(fc: VirtualFC, client: RawClient) -> None:
    client.command(176, 1, 4)
    assert client.recv(["COMMAND_ACK"], 2).result == 0
    assert client.recv(["HEARTBEAT"], 1, lambda m: m.custom_mode == 4) is not None
    client.command(400, 1)
    assert client.recv(["COMMAND_ACK"], 2, lambda m: m.command == 400).result == 0
    assert client.recv(["HEARTBEAT"], 2, lambda m: m.base_mode & 128) is not None
    assert fc.armed and isinstance(fc.authority, AllowArming) and fc.authority.armed
    client.command(400, 0)
    assert client.recv(["COMMAND_ACK"], 2, lambda m: m.command == 400).result == 0 and not fc.armed


def test_force_arm_skips_the_checks_as_ardupilot_does() -> None:
    with VirtualFC(VfcConfig(**FAST), authority=DenyArming()) as vfc:
        c = RawClient(vfc.ports[1])
        c.recv(["HEARTBEAT"], 2)
        for magic in (2989, 21196):
            c.command(400, 1, magic)
            assert c.recv(["COMMAND_ACK"], 2).result == 0 and vfc.armed
            c.command(400, 0)
            assert c.recv(["COMMAND_ACK"], 2).result == 0 and not vfc.armed
        c.close()


class Recorder(AllowArming):
    """An arming authority that records what the vehicle gives it and answers on channel 1."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, bytes]] = []
        self.ticks: list[int] = []
        self.bus: VehicleBus | None = None

    def boot(self, bus: VehicleBus) -> None:
        super().boot(bus)
        self.bus = bus

    def on_frame(self, channel: int, frame: bytes) -> None:
        self.seen.append((channel, frame))
        if self.bus is not None and b"PING" in frame:
            payload = bytes(8) + b"PONG".ljust(10, b"\0")  # NAMED_VALUE_INT: time, value, name
            self.bus.send_payload(1, 252, payload)

    def tick(self, now_ms: int) -> None:
        self.ticks.append(now_ms)

    def is_command_blocked(self, command: int) -> bool:
        return command == 31010


def test_arming_authority_sees_every_frame_with_its_channel_and_can_answer() -> None:
    rec = Recorder()
    assert isinstance(rec, ArmingAuthority)
    with VirtualFC(VfcConfig(**FAST), authority=rec) as vfc:
        assert isinstance(vfc, VehicleBus)
        companion, gcs = RawClient(vfc.ports[1]), RawClient(vfc.ports[0], sysid=255, compid=190)
        companion.recv(["HEARTBEAT"], 2)
        gcs.recv(["HEARTBEAT"], 2)
        companion.heartbeat()
        gcs.heartbeat(6, 8)
        gcs.send(gcs.mav.named_value_int_encode(0, b"PING", 1))
        pong = companion.recv(["NAMED_VALUE_INT"], 2, lambda m: m.name == "PONG")
        assert pong is not None and (pong.get_srcSystem(), pong.get_srcComponent()) == (1, 1)
        assert vfc.wait_for(lambda: {c for c, _ in rec.seen} == {0, 1}, 2)
        assert any(f[5] == 255 and c == 0 for c, f in rec.seen)  # the GCS frame, on channel 0
        companion.command(31010)
        companion.command(31999)
        acks = [m.command for m in companion.collect(0.5, ["COMMAND_ACK"])]
        assert 31999 in acks and 31010 not in acks  # a blocked command is left to the provider
        assert len(rec.ticks) > 5 and rec.ticks == sorted(rec.ticks)
        companion.close()
        gcs.close()


def test_gcs_traffic_is_routed_to_the_companion_channel(fc: VirtualFC, client: RawClient) -> None:
    gcs = RawClient(fc.ports[0], sysid=255, compid=190)
    gcs.recv(["HEARTBEAT"], 2)
    gcs.heartbeat(6, 8)
    routed = client.recv(["HEARTBEAT"], 2, lambda m: m.get_srcSystem() == 255)
    assert routed is not None and routed.type == 6
    gcs.close()


def test_signed_fc_drops_unsigned_packets_except_on_channel_0() -> None:
    key = bytes(range(32))
    with VirtualFC(VfcConfig(signing_key=key, **FAST)) as vfc:
        for channel, answered in ((1, False), (0, True)):
            c = RawClient(vfc.ports[channel])
            hb = c.recv(["HEARTBEAT"], 2)
            assert hb is not None and hb.get_msgbuf()[2] & 1  # incompat flag: signed
            c.command(512, 148)
            got = c.recv(["AUTOPILOT_VERSION"], 0.5)
            assert (got is not None) == answered, channel
            c.close()


def test_bus_hook_sends_text_and_reports_time(fc: VirtualFC, client: RawClient) -> None:
    fc.send_text(4, "hello from Lua")
    assert client.recv(["STATUSTEXT"], 2, lambda m: m.text == "hello from Lua").severity == 4
    assert 0 < fc.time_ms() < 60_000 and fc.channels() == [1]


def test_stop_closes_every_port(fc: VirtualFC) -> None:
    ports = fc.ports
    fc.stop()
    import socket

    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0



# ---- DroneCAN through MAVLink CAN forwarding (recorded on SITL with CAN_P1_DRIVER 1, CAN_D1_PROTOCOL 1)

def _ack(c: RawClient, command: int) -> int:
    ack = c.recv(["COMMAND_ACK"], 2, lambda m: m.command == command)
    assert ack is not None
    return int(ack.result)


def test_without_can_forwarding_is_refused_and_node_info_unsupported_as_sitl(client: RawClient) -> None:
    client.command(32000, 1)  # MAV_CMD_CAN_FORWARD bus 1: SITL without CAN_P1_DRIVER has no bus
    assert _ack(client, 32000) == 4  # MAV_RESULT_FAILED
    client.command(5200)  # MAV_CMD_UAVCAN_GET_NODE_INFO: ArduPilot does not implement it
    assert _ack(client, 5200) == 3  # UNSUPPORTED
    assert not client.collect(1.2, ["UAVCAN_NODE_STATUS", "UAVCAN_NODE_INFO"])


def test_can_forwarding_follows_ap_mavlinkcan() -> None:
    from sim.vfc import DroneCanNode

    with VirtualFC(VfcConfig(dronecan_nodes=(DroneCanNode(42, "com.acme.gps"),), **FAST)) as vfc:
        c = RawClient(vfc.ports[1])
        assert c.recv(["HEARTBEAT"], 3) is not None
        assert vfc.params.get("CAN_D1_UC_NODE") is not None, "the DroneCAN driver's parameters appear"
        c.command(32000, 2)
        assert _ack(c, 32000) == 4, "bus 2 is not configured"
        c.command(32000, 1)
        assert _ack(c, 32000) == 0
        frames = c.collect(1.5, ["CAN_FRAME"])
        assert frames and all(f.bus == 0 and f.id & 0x8000_0000 for f in frames), "bus 0-based, extended flag"
        assert all(f.target_system == 1 and f.target_component == 191 for f in frames), "sent to who asked"
        sources = {f.id & 0x7F for f in frames}
        assert {10, 42} <= sources, "the FC's own node (CAN_D1_UC_NODE 10) and node 42 broadcast NodeStatus"
        # a GetNodeInfo request from node 127 to node 42 (single frame, tail byte only), bus 0-based
        c.send(c.mav.can_frame_encode(1, 1, 0, 1, 0x1E01AAFF | 0x8000_0000, [0xC5, 0, 0, 0, 0, 0, 0, 0]))
        reply = c.collect(1.0, ["CAN_FRAME"])
        answer = [f for f in reply if f.id & 0x1FFF_FFFF == 0x1E017FAA]
        assert len(answer) > 1 and answer[0].data[7] & 0x80 and answer[-1].data[answer[-1].len - 1] & 0x40
        c.send(c.mav.can_filter_modify_encode(1, 1, 1, 0, 1, [1] + [0] * 15))  # bus 1-based here
        time.sleep(0.1)
        assert not [f for f in c.collect(1.3, ["CAN_FRAME"]) if not f.id & 0x80], "NodeStatus filtered out"
        c.command(32000, 0)
        assert _ack(c, 32000) == 0
        assert not c.collect(1.2, ["CAN_FRAME"])
        c.close()
