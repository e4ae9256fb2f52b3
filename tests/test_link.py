"""The agent's MAVLink link: identity, heartbeats, bounded waits, reconnects, signing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agent.mavlink.link import FcSilent, Link, LinkConfig, LinkError, LinkLost, parse_url
from sim.vfc import VfcConfig, VirtualFC

FAST = {"standby_delay": 0.1}
KEY = bytes(range(100, 132))


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    with VirtualFC(VfcConfig(**FAST)) as vfc:
        yield vfc


@pytest.mark.parametrize(("url", "kind", "device", "baud"), [
    ("tcp:127.0.0.1:5762", "tcp", "tcp:127.0.0.1:5762", 115200),
    ("udpin:0.0.0.0:14550", "udpin", "udpin:0.0.0.0:14550", 115200),
    ("udpout:10.0.0.2:14550", "udpout", "udpout:10.0.0.2:14550", 115200),
    ("/dev/ttyAMA0,921600", "serial", "/dev/ttyAMA0", 921600),
    ("/dev/ttyUSB0", "serial", "/dev/ttyUSB0", 115200),
])
def test_connection_strings_are_parsed(url: str, kind: str, device: str, baud: int) -> None:
    ep = parse_url(url)
    assert (ep.kind, ep.device, ep.baud) == (kind, device, baud)


@pytest.mark.parametrize(("url", "hint"), [
    ("tcp:127.0.0.1", "tcp:HOST:PORT"), ("tcp:host:99999", "tcp:HOST:PORT"), ("/dev/ttyS0,fast", "baud rate"),
    ("serial0", "use /dev/ttyX,BAUD"),
])
def test_bad_connection_strings_say_how_to_fix_them(url: str, hint: str) -> None:
    with pytest.raises(LinkError, match=hint.replace("/", ".")):
        parse_url(url)


def test_agent_is_an_onboard_computer_heartbeating_at_its_rate(fc: VirtualFC) -> None:
    with Link.open(LinkConfig(fc.url(1), heartbeat_period=0.1)) as link:
        assert link.fc == (1, 1) and link.fc_heartbeat.type == 2
        link.recv(["NONE"], 0.55)
    hbs = [r for r in fc.received if r[1] == "HEARTBEAT"]
    assert all(r[0] == 1 and (r[2], r[3]) == (1, 191) for r in hbs)
    assert 5 <= len(hbs) <= 9
    assert fc.wait_for(lambda: True, 0)


def test_silent_fc_is_reported_within_the_bound() -> None:
    with VirtualFC(VfcConfig(silent=True)) as vfc:
        start = time.monotonic()
        with pytest.raises(FcSilent, match=r"no HEARTBEAT from the flight controller within 0\.5 s"):
            Link.open(LinkConfig(vfc.url(1), heartbeat_timeout=0.5))
        assert time.monotonic() - start < 2.0


def test_nothing_listening_is_a_clear_error_within_the_bound() -> None:
    start = time.monotonic()
    with pytest.raises(LinkError, match="cannot open MAVLink link"):
        Link.open(LinkConfig("tcp:127.0.0.1:1", connect_timeout=0.3))
    assert time.monotonic() - start < 2.0


def test_a_connection_reset_by_the_fc_is_a_lost_link_not_a_traceback() -> None:
    """Seen on SITL: a connection made while SITL re-executes after a reboot is reset by the peer."""
    import socket
    import struct
    import threading

    from pymavlink.dialects.v20 import ardupilotmega as mavlink

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def fc_then_reset() -> None:
        conn, _ = server.accept()
        hb = mavlink.MAVLink_heartbeat_message(2, 3, 81, 0, 3, 3).pack(mavlink.MAVLink(None, 1, 1))
        conn.sendall(hb)
        time.sleep(0.3)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        conn.close()

    t = threading.Thread(target=fc_then_reset, daemon=True)
    t.start()
    try:
        with Link.open(LinkConfig(f"tcp:127.0.0.1:{port}", heartbeat_timeout=2)) as link:
            with pytest.raises(LinkLost, match=r"reset|closed"):
                link.recv(["NONE"], 2)
            with pytest.raises(LinkLost):
                link.send_heartbeat()
    finally:
        t.join(timeout=2)
        server.close()


def test_reboot_closes_the_link_and_reconnect_finds_the_fc_again(fc: VirtualFC) -> None:
    with Link.open(LinkConfig(fc.url(1))) as link:
        ack = link.command_long(246, [1])
        assert ack is not None and ack.result == 0
        start = time.monotonic()
        with pytest.raises(LinkLost, match="closed the connection"):
            link.recv(["NONE"], 3)
        assert time.monotonic() - start < 1.5
        link.reconnect(timeout=5)
        assert fc.boots == 2 and link.fc_heartbeat.system_status == 1
        assert link.request_message(148, "AUTOPILOT_VERSION") is not None


def test_commands_without_an_answer_give_up_after_bounded_retries() -> None:
    with VirtualFC(VfcConfig(**FAST)) as vfc, Link.open(LinkConfig(vfc.url(1))) as link:
        start = time.monotonic()
        assert link.command_long(31010, target=(1, 77), timeout=0.2, retries=2) is None
        assert link.request_message(9999, "NONE", timeout=0.2, retries=3) is None  # refused: FAILED, no retry
        assert time.monotonic() - start < 1.0


def test_signed_link_is_answered_and_unsigned_is_ignored_on_serial1() -> None:
    with VirtualFC(VfcConfig(signing_key=KEY, **FAST)) as vfc:
        with Link.open(LinkConfig(vfc.url(1), signing_key=KEY)) as link:
            assert link.request_message(148, "AUTOPILOT_VERSION", timeout=0.5) is not None
        with Link.open(LinkConfig(vfc.url(1))) as unsigned:
            assert unsigned.request_message(148, "AUTOPILOT_VERSION", timeout=0.2, retries=2) is None
        with pytest.raises(FcSilent):  # the FC's packets do not authenticate under another key
            Link.open(LinkConfig(vfc.url(1), signing_key=bytes(32 * [7]), heartbeat_timeout=0.5))


def test_signed_agent_sees_an_unsigned_fc_by_its_heartbeat_and_takes_nothing_else_from_it() -> None:
    """The FC's unsigned HEARTBEATs pass (the posture must see an FC that stopped signing); every other
    unsigned packet is dropped."""
    with VirtualFC(VfcConfig(**FAST)) as vfc, \
            Link.open(LinkConfig(vfc.url(1), signing_key=KEY, heartbeat_timeout=2.0)) as link:
        assert link.fc_heartbeat is not None and not getattr(link.fc_heartbeat, "_signed", False)
        link.send(link.mav.param_request_read_encode(1, 1, b"ARMING_CHECK", -1))
        assert link.recv(["PARAM_VALUE"], 1.5) is None


def test_everyone_heard_is_noted(fc: VirtualFC) -> None:
    from tests.vfc_fixtures import RawClient

    with Link.open(LinkConfig(fc.url(1))) as link:
        gcs = RawClient(fc.ports[0], sysid=255, compid=190)
        gcs.recv(["HEARTBEAT"], 2)
        gcs.heartbeat(6, 8)
        link.recv(["HEARTBEAT"], 2, lambda m: m.get_srcSystem() == 255)
        assert set(link.heard) >= {(1, 1), (255, 190)}
        assert link.heard[(255, 190)].heartbeat.type == 6
        gcs.close()


def setup_signing(link: Link, key: bytes) -> None:
    ts = int((time.time() - 1420070400) * 100_000)
    link.send(link.mav.setup_signing_encode(1, 1, list(key), ts))


def test_setup_signing_then_only_signed_packets_are_answered_even_after_a_reboot(fc: VirtualFC) -> None:
    with Link.open(LinkConfig(fc.url(1))) as link:
        setup_signing(link, KEY)
        assert fc.wait_for(lambda: fc.signing_key == KEY, 1)
        assert link.request_message(148, "AUTOPILOT_VERSION", timeout=0.2, retries=2) is None
    with Link.open(LinkConfig(fc.url(1), signing_key=KEY)) as signed:
        assert signed.request_message(148, "AUTOPILOT_VERSION", timeout=0.5) is not None
        signed.reboot_fc(timeout=5)
        assert signed.request_message(148, "AUTOPILOT_VERSION", timeout=0.5) is not None


def test_link_config_follows_the_agent_config_file() -> None:
    from agent.config import MavlinkConfig
    from agent.mavlink.link import link_config

    cfg = link_config(MavlinkConfig(url="/dev/ttyAMA0,921600", system_id=7, heartbeat_timeout_s=3.0), KEY)
    assert (cfg.url, cfg.system_id, cfg.component_id, cfg.heartbeat_timeout, cfg.signing_key) == (
        "/dev/ttyAMA0,921600", 7, 191, 3.0, KEY)


def test_a_flood_of_made_up_ids_cannot_hide_a_part_that_joins_afterwards(fc: VirtualFC) -> None:
    """Issue 11: with the table of heard senders full, newcomers were ignored, so a flood of made-up
    ids hid a real camera plugged in after it. Now the sender heard least recently makes room."""
    from pymavlink.dialects.v20 import ardupilotmega as mavlink

    from agent.mavlink.link import MAX_COMPONENTS

    def heartbeat(sysid: int, compid: int) -> object:
        msg = mavlink.MAVLink_heartbeat_message(30, 8, 0, 0, 4, 3)
        msg.pack(mavlink.MAVLink(None, sysid, compid))
        return msg

    with Link.open(LinkConfig(fc.url(1))) as link:
        for i in range(MAX_COMPONENTS * 3):
            link.observe(heartbeat(100 + i % 150, 1 + i // 150))
        assert len(link.heard) == MAX_COMPONENTS and link.fc in link.heard
        link.observe(heartbeat(1, 100))  # the camera
        assert (1, 100) in link.heard and link.fc in link.heard
