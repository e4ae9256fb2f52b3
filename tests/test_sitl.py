"""The same scenarios against real ArduCopter SITL and the virtual FC, compared.

Needs ``FLIGHTSEAL_SITL_BINARY`` (an ArduCopter SITL build); skipped with the reason otherwise.
One SITL process serves the module (scripting on, the two scripts of the "ftp" capture); the
reboot scenario runs last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from agent.mavlink.ftp import FtpClient, FtpError, FtpNotFound
from agent.mavlink.ftpwire import FtpErr
from agent.mavlink.link import Link, LinkConfig, LinkLost
from agent.measure import MeasureOptions, measure
from attest.models import Measurement
from sim.launchers.sitl import Sitl, SitlConfig, free_instance
from sim.vfc import VfcConfig, VirtualFC
from tests.vfc_fixtures import IDLE_LUA, TICK_LUA

pytestmark = [
    pytest.mark.sitl,
    pytest.mark.skipif(not os.environ.get("FLIGHTSEAL_SITL_BINARY"),
                       reason="FLIGHTSEAL_SITL_BINARY is not set (path to an ArduCopter SITL build, "
                              "build/sitl/bin/arducopter)"),
]

SCRIPTS = {"tick.lua": TICK_LUA, "idle.lua": IDLE_LUA}
OPTS = MeasureOptions(listen_time=0.3)
COMMON_IDENTITY = ("git_hash", "version", "version_type", "flight_sw_version", "board_id", "board_version",
                   "vendor_id", "product_id", "capabilities", "mav_type", "autopilot")


@pytest.fixture(scope="module")
def sitl(request: pytest.FixtureRequest) -> Iterator[Sitl]:
    failed_before = request.session.testsfailed
    with Sitl(SitlConfig(instance=free_instance(), scripting=True, scripts=SCRIPTS)) as s:
        yield s
        s.keep = request.session.testsfailed > failed_before  # keep SITL's log for a post-mortem


@pytest.fixture(scope="module")
def vfc() -> Iterator[VirtualFC]:
    with VirtualFC(VfcConfig(scripts=SCRIPTS, standby_delay=0.1)) as fc:
        yield fc


@pytest.fixture
def both(sitl: Sitl, vfc: VirtualFC) -> Iterator[dict[str, Link]]:
    links = {"sitl": Link.open(LinkConfig(sitl.url)), "vfc": Link.open(LinkConfig(vfc.url(1)))}
    yield links
    for link in links.values():
        link.close()


def on_both(both: dict[str, Link], fn: Callable[[Link], Any]) -> tuple[Any, Any]:
    return fn(both["sitl"]), fn(both["vfc"])


def components(ms: list[Measurement]) -> dict[str, Measurement]:
    return {m.component: m for m in ms}


def test_identity_is_reported_alike(both: dict[str, Link]) -> None:
    s, v = on_both(both, lambda lk: components(measure(lk, OPTS).measurements)["fc.firmware"].claims)
    assert {k: s[k] for k in COMMON_IDENTITY} == {k: v[k] for k in COMMON_IDENTITY}
    assert s["uid"] and v["uid"]  # both derive uid from uid2 (SITL: from the host's machine id)


def test_parameter_digests_agree_between_sitl_and_the_virtual_fc(both: dict[str, Link]) -> None:
    def params(lk: Link) -> tuple[Measurement, Measurement]:
        via_ftp = components(measure(lk, OPTS).measurements)["fc.params"]
        via_protocol = components(measure(lk, replace(OPTS, param_source="mavlink")).measurements)["fc.params"]
        return via_ftp, via_protocol

    (s_ftp, s_proto), (v_ftp, v_proto) = on_both(both, params)
    assert s_ftp.claims["count"] == v_ftp.claims["count"] == 1368
    assert s_ftp.digests == s_proto.digests == v_ftp.digests == v_proto.digests


def test_ftp_listings_sizes_errors_and_crc_agree(both: dict[str, Link]) -> None:
    def probe(lk: Link) -> dict[str, Any]:
        ftp = FtpClient(lk)
        ftp.reset_sessions()
        out: dict[str, Any] = {
            "scripts": sorted((e.name, e.is_dir, e.size) for e in ftp.list_dir("scripts")),
            "sys": sorted((e.name, e.size) for e in ftp.list_dir("@SYS")),
            "root_dirs_only": all(e.is_dir for e in ftp.list_dir("/")),
            "crc": ftp.crc32("scripts/tick.lua"),
            "tick": ftp.read_file("scripts/tick.lua", 1000),
        }
        for path in ("@SYS/uarts.txt", "@PARAM/param.pck"):
            reported: list[int | None] = []

            def note(_done: int, size: int | None, seen: list[int | None] = reported) -> None:
                seen.append(size)

            ftp.read_file(path, 1 << 20, note)
            out[f"size {path}"] = reported[0]
        try:
            ftp.list_dir("@ROMFS/scripts")
        except FtpError as exc:  # FailErrno with a stale errno: ArduPilot's ROMFS does not set one
            out["romfs scripts"] = exc.code
        for name, call in (("missing", lambda: ftp.read_file("scripts/missing.lua", 100)),
                           ("flash", lambda: ftp.read_file("@SYS/flash.bin", 100)),
                           ("param dir", lambda: ftp.list_dir("@PARAM"))):
            try:
                call()
                out[name] = "found"
            except FtpNotFound:
                out[name] = "not found"
        return out

    s, v = on_both(both, probe)
    # the errno of a missing ROMFS directory is stale in ArduPilot: FailErrno, or FileNotFound when it was ENOENT
    assert s.pop("romfs scripts") in (FtpErr.FAIL_ERRNO, FtpErr.FILE_NOT_FOUND)
    assert v.pop("romfs scripts") == FtpErr.FAIL_ERRNO
    assert s == v
    assert v["crc"] == 0xD57ED916
    assert v["size @SYS/uarts.txt"] == 100000 and v["size @PARAM/param.pck"] == 12 * 1368


def test_command_results_agree(both: dict[str, Link]) -> None:
    def results(lk: Link) -> tuple[int, int, int]:
        unknown = lk.command_long(31999, timeout=1)
        bad_msg = lk.command_long(512, [9999.0], timeout=1)
        mode = lk.command_long(176, [1.0, 0.0], timeout=1)  # custom mode STABILIZE, as it already is
        return unknown.result, bad_msg.result, mode.result

    assert on_both(both, results) == ((3, 4, 0), (3, 4, 0))


def test_parameter_change_is_echoed_alike(both: dict[str, Link]) -> None:
    def set_and_echo(lk: Link) -> tuple[int, int, float]:
        lk.send(lk.mav.param_set_encode(1, 1, b"RTL_ALT", 1700.0, 6))
        echo = lk.recv(["PARAM_VALUE"], 2, lambda m: m.param_id == "RTL_ALT")
        lk.send(lk.mav.param_set_encode(1, 1, b"RTL_ALT", 1500.0, 6))
        lk.recv(["PARAM_VALUE"], 2, lambda m: m.param_id == "RTL_ALT" and m.param_value == 1500.0)
        return echo.param_index, echo.param_type, echo.param_value

    assert on_both(both, set_and_echo) == ((0xFFFF, 6, 1700.0), (0xFFFF, 6, 1700.0))


def test_sitl_measurements_are_stable_and_one_script_change_shows(sitl: Sitl) -> None:
    with Link.open(LinkConfig(sitl.url)) as lk:
        first, second = measure(lk, OPTS), measure(lk, OPTS)
        assert first.problems == []
        assert [m.to_json() for m in first.measurements] == [m.to_json() for m in second.measurements]
        image = components(first.measurements)["fc.firmware-image"]
        assert image.source.startswith("file:") and image.claims["sitl"] is True
        (sitl.scripts_dir / "extra.lua").write_bytes(b"-- added on the host\n")
        try:
            third = components(measure(lk, OPTS).measurements)
        finally:
            (sitl.scripts_dir / "extra.lua").unlink()
    before = components(first.measurements)
    assert set(third) - set(before) == {"fc.script:scripts/extra.lua"}
    assert {c for c in before if before[c].to_json() != third[c].to_json()} == set()


def test_reboot_drops_the_link_and_the_fc_comes_back_alike(both: dict[str, Link]) -> None:
    def reboot(lk: Link) -> tuple[int, int]:
        digest = components(measure(lk, OPTS).measurements)["fc.params"].digests["sha256"]
        ack = lk.command_long(246, [1.0])
        start = time.monotonic()
        with pytest.raises(LinkLost):
            lk.recv(["NONE"], 3)
        lost_after = time.monotonic() - start
        lk.reconnect(timeout=20)
        after = components(measure(lk, OPTS).measurements)["fc.params"].digests["sha256"]
        assert after == digest  # volatile values are excluded: the digest survives a reboot
        assert 0.1 <= lost_after < 1.5  # ArduPilot closes about 200 ms after the ACK
        return ack.result, lk.fc_heartbeat.system_status

    s, v = on_both(both, reboot)
    assert s[0] == v[0] == 0 and s[1] in (1, 3) and v[1] in (1, 3)  # BOOT, or STANDBY if it booted fast


def test_signing_set_up_over_the_link_is_enforced_alike() -> None:
    from tests.test_link import KEY, setup_signing

    def scenario(url: str) -> tuple[bool, bool, bool]:
        with Link.open(LinkConfig(url)) as lk:
            setup_signing(lk, KEY)
            time.sleep(0.3)
            unsigned = lk.request_message(148, "AUTOPILOT_VERSION", timeout=0.3, retries=2) is not None
        with Link.open(LinkConfig(url, signing_key=KEY)) as signed:
            answered = signed.request_message(148, "AUTOPILOT_VERSION", timeout=0.5) is not None
            signed.reboot_fc(timeout=20)
            after_reboot = signed.request_message(148, "AUTOPILOT_VERSION", timeout=0.5, retries=5) is not None
        return unsigned, answered, after_reboot

    with VirtualFC(VfcConfig(standby_delay=0.1)) as fresh_vfc, \
            Sitl(SitlConfig(instance=free_instance())) as fresh_sitl:  # the key persists: own instances
        assert scenario(fresh_sitl.url) == scenario(fresh_vfc.url(1)) == (False, True, True)
