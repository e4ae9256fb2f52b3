"""The agent's MAVLink FTP client (ADR 0006) against the virtual FC: fast failures, bounded everything."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from agent.mavlink.ftp import FtpClient, FtpError, FtpLimits, FtpNotFound, FtpTooLarge
from agent.mavlink.ftpwire import FtpErr, crc32_ardupilot
from agent.mavlink.link import Link, LinkConfig
from sim.vfc import VfcConfig, VirtualFC
from tests.vfc_fixtures import IDLE_LUA, TICK_LUA

IMAGE = os.urandom(64 * 1024 + 17)


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    config = VfcConfig(scripts={"tick.lua": TICK_LUA, "idle.lua": IDLE_LUA}, flash_image=IMAGE, standby_delay=0.1)
    with VirtualFC(config) as vfc:
        yield vfc


@pytest.fixture
def ftp(fc: VirtualFC) -> Iterator[FtpClient]:
    with Link.open(LinkConfig(fc.url(1))) as link:
        client = FtpClient(link)
        client.reset_sessions()
        yield client


def test_list_gives_names_kinds_and_sizes(ftp: FtpClient) -> None:
    entries = {e.name: e for e in ftp.list_dir("scripts")}
    assert entries["tick.lua"].size == 140 and not entries["tick.lua"].is_dir and entries["."].is_dir
    assert len(ftp.list_dir("@SYS")) == 12  # SITL's 11 files plus flash.bin on a board


def test_read_returns_the_exact_bytes_whatever_size_the_fc_reports(ftp: FtpClient) -> None:
    assert ftp.read_file("scripts/tick.lua", 1000) == TICK_LUA
    assert ftp.read_file("@SYS/flash.bin", 1 << 20) == IMAGE  # @SYS reports 100000 bytes
    assert ftp.read_file("@SYS/uarts.txt", 4096).startswith(b"UARTV1\n")


def test_missing_file_fails_at_once_with_file_not_found(ftp: FtpClient) -> None:
    start = time.monotonic()
    with pytest.raises(FtpNotFound, match=r"scripts/missing\.lua: FTP error file-not-found") as err:
        ftp.read_file("scripts/missing.lua", 1000)
    assert err.value.code == FtpErr.FILE_NOT_FOUND and time.monotonic() - start < 0.5
    with pytest.raises(FtpNotFound):
        ftp.list_dir("@PARAM")


def test_crc32_is_returned_and_is_ardupilots(ftp: FtpClient) -> None:
    assert ftp.crc32("scripts/tick.lua") == 0xD57ED916
    assert ftp.crc32("@SYS/flash.bin") == crc32_ardupilot(IMAGE)


def test_a_file_larger_than_the_bound_is_refused(ftp: FtpClient) -> None:
    with pytest.raises(FtpTooLarge, match="larger than the limit of 4096 bytes"):
        ftp.read_file("@SYS/flash.bin", 4096)
    assert ftp.read_file("scripts/tick.lua", 140) == TICK_LUA  # the session was closed: FTP still works


def test_lost_burst_packets_are_read_again() -> None:
    with VirtualFC(VfcConfig(flash_image=IMAGE, ftp_drop_every=7)) as vfc, Link.open(LinkConfig(vfc.url(1))) as link:
        assert FtpClient(link).read_file("@SYS/flash.bin", 1 << 20) == IMAGE


def test_an_fc_without_ftp_times_out_within_the_bound() -> None:
    with VirtualFC(VfcConfig(ftp_enabled=False)) as vfc, Link.open(LinkConfig(vfc.url(1))) as link:
        start = time.monotonic()
        with pytest.raises(FtpError, match="no reply from the flight controller") as err:
            FtpClient(link, FtpLimits(reply_timeout=0.2, retries=2)).read_file("scripts/x.lua", 100)
        assert err.value.code is None and time.monotonic() - start < 1.0


def test_upload_then_read_back_then_remove(ftp: FtpClient, fc: VirtualFC) -> None:
    data = os.urandom(1000)
    ftp.write_file("scripts/flightseal_gate.lua", data)
    assert (fc.scripts_dir / "flightseal_gate.lua").read_bytes() == data
    assert ftp.read_file("scripts/flightseal_gate.lua", 2000) == data
    ftp.remove("scripts/flightseal_gate.lua")
    assert not (fc.scripts_dir / "flightseal_gate.lua").exists()
    with pytest.raises(FtpError, match=r"read-only|errno"):
        ftp.write_file("@SYS/flash.bin", b"x")


def test_paced_burst_read_keeps_up_with_the_rate_the_fc_offers() -> None:
    image = os.urandom(24 * 239)
    bps = 92160  # a 921,600-baud link: ArduPilot sends one 239-byte packet every 8 ms
    offered = 239 / ((3000 * (12 + 254) // bps) / 1000)
    with VirtualFC(VfcConfig(flash_image=image, ftp_link_bps=bps)) as vfc, Link.open(LinkConfig(vfc.url(1))) as link:
        client = FtpClient(link)
        start = time.monotonic()
        assert client.read_file("@SYS/flash.bin", 1 << 20) == image
        rate = len(image) / (time.monotonic() - start)
    assert rate >= 0.9 * offered * (24 / 25)  # one packet interval of latency on 24 packets


def test_a_lost_last_packet_is_read_after_the_eof_nak() -> None:
    image = os.urandom(7 * 239 - 10)  # 7 packets: the 7th, short and burst-complete, is dropped
    with VirtualFC(VfcConfig(flash_image=image, ftp_drop_every=7)) as vfc, Link.open(LinkConfig(vfc.url(1))) as link:
        start = time.monotonic()
        assert FtpClient(link).read_file("@SYS/flash.bin", 1 << 20) == image
        assert time.monotonic() - start < 0.5


def test_a_file_left_open_by_another_link_is_waited_out_within_the_bound(fc: VirtualFC) -> None:
    from agent.mavlink.ftpwire import FtpPacket, Op
    from tests.vfc_fixtures import RawClient

    other = RawClient(fc.ports[0], sysid=255, compid=190)
    other.recv(["HEARTBEAT"], 2)
    other.ftp(FtpPacket(1, 9, Op.OPEN_FILE_RO, len(b"scripts/idle.lua"), data=b"scripts/idle.lua"))
    assert other.ftp_reply(2).opcode == Op.ACK  # and never closed
    with Link.open(LinkConfig(fc.url(1))) as link:
        start = time.monotonic()
        assert FtpClient(link, FtpLimits(busy_wait=3.1)).read_file("scripts/tick.lua", 1000) == TICK_LUA
        assert 3.0 < time.monotonic() - start < 5.0
    other.close()


def test_a_burst_packet_repeated_forever_ends_in_a_bounded_stall() -> None:
    """Issue 11: a repeated burst packet reset the stall timer, and a read ran on (20 s seen)."""
    import time as _time

    from agent.mavlink.ftp import FtpClient, FtpError, FtpLimits
    from agent.mavlink.ftpwire import MAX_DATA, FtpPacket, Op

    class Repeating(FtpClient):
        def __init__(self) -> None:  # no link: every reply is the same first packet of the file
            self.limits = FtpLimits(burst_stall=0.2, burst_restarts=2)
            self._session = 3
            self._seq = 0

        def _send(self, packet: FtpPacket) -> None:
            pass

        def _next(self, timeout: float) -> FtpPacket | None:
            _time.sleep(0.005)
            return FtpPacket(1, 3, Op.ACK, MAX_DATA, Op.BURST_READ_FILE, 0, 0, b"x" * MAX_DATA)

    start = _time.monotonic()
    with pytest.raises(FtpError, match="burst stalled"):
        Repeating()._burst_read("scripts/a.lua", 1 << 20, None, None)
    assert _time.monotonic() - start < 2.0
