"""Every collector against the virtual FC: stable digests, one change changes one measurement,
failures are bounded and named, and the measurements are what the appraisal reads."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.mavlink.ftp import FtpLimits
from agent.mavlink.link import Link, LinkConfig
from agent.measure import ImageCache, Inventory, MeasureOptions, measure
from agent.measure.parampck import decode
from attest import params as paramdigest
from attest.appraise import appraise
from attest.manifest import Airframe, ApprovedComponent, Firmware, Manifest, ParamPolicy, Script
from attest.models import Code, Kind, Measurement, Strength
from sim.vfc import BusComponent, DroneCanNode, FirmwareInfo, VfcConfig, VirtualFC
from tests.vfc_fixtures import IDLE_LUA, TICK_LUA

GATE = b"-- FlightSeal gate (test stand-in)\nreturn function() end\n"
IMAGE = os.urandom(50_000)
QUICK = MeasureOptions(listen_time=0.3, use_sitl_env=False)


def by_component(inv: Inventory) -> dict[str, Measurement]:
    return {m.component: m for m in inv.measurements}


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    config = VfcConfig(scripts={"flightseal.lua": GATE, "tick.lua": TICK_LUA}, flash_image=IMAGE,
                       firmware=FirmwareInfo(board_id=1013, uid2=bytes.fromhex("3a0029000c51333233363935")),
                       standby_delay=0.1)
    with VirtualFC(config) as vfc:
        yield vfc


@pytest.fixture
def link(fc: VirtualFC) -> Iterator[Link]:
    with Link.open(LinkConfig(fc.url(1))) as lk:
        yield lk


def test_identity_has_the_claims_the_appraisal_reads(link: Link) -> None:
    m = by_component(measure(link, QUICK))["fc.firmware"]
    assert m.kind is Kind.FIRMWARE and m.strength is Strength.SELF_REPORTED and m.source == "mavlink:AUTOPILOT_VERSION"
    assert m.claims["git_hash"] == "2598e9d4" and m.claims["version"] == "4.7.0" and m.claims["board_id"] == 1013
    assert m.claims["uid"] == "3a0029000c51333233363935" and m.claims["uid2"].startswith("3a0029000c5133")
    assert m.claims["version_type"] == "dev" and m.claims["vendor_id"] == 0


def test_two_reads_of_an_unchanged_fc_give_identical_measurements(link: Link) -> None:
    first, second = measure(link, QUICK), measure(link, QUICK)
    assert first.problems == [] and second.problems == []
    assert [m.to_json() for m in first.measurements] == [m.to_json() for m in second.measurements]


def test_one_parameter_change_changes_only_the_parameter_measurement(link: Link, fc: VirtualFC) -> None:
    before = by_component(measure(link, QUICK))
    fc.set_param("RTL_ALT", 2000)
    after = by_component(measure(link, QUICK))
    changed = {c for c in before if before[c].to_json() != after[c].to_json()}
    assert changed == {"fc.params"}


def test_one_script_change_changes_only_that_script(link: Link, fc: VirtualFC) -> None:
    before = by_component(measure(link, QUICK))
    (fc.scripts_dir / "tick.lua").write_bytes(TICK_LUA.replace(b"1000", b"2000"))
    after = by_component(measure(link, QUICK))
    assert {c for c in before if before[c].to_json() != after[c].to_json()} == {"fc.script:scripts/tick.lua"}
    (fc.scripts_dir / "idle.lua").write_bytes(IDLE_LUA)
    added = by_component(measure(link, QUICK))
    assert set(added) - set(after) == {"fc.script:scripts/idle.lua"}


def test_scripts_are_hashed_by_their_fc_path(link: Link) -> None:
    m = by_component(measure(link, QUICK))["fc.script:scripts/flightseal.lua"]
    assert m.digests["sha256"] == hashlib.sha256(GATE).hexdigest() and m.claims["path"] == "scripts/flightseal.lua"
    assert m.source == "mavlink-ftp:scripts/flightseal.lua"


def test_parameter_digest_survives_a_reboot_thanks_to_the_exclusions(link: Link, fc: VirtualFC) -> None:
    before = by_component(measure(link, QUICK))["fc.params"]
    link.reboot_fc(timeout=5)
    after = by_component(measure(link, QUICK))["fc.params"]
    assert fc.boots == 2 and fc.get_param("STAT_BOOTCNT") != 0
    assert before.digests == after.digests
    unexcluded = replace(QUICK, param_exclusions=())
    assert by_component(measure(link, unexcluded))["fc.params"].digests != before.digests


def test_param_pck_and_param_protocol_give_the_same_digest(link: Link) -> None:
    via_ftp = by_component(measure(link, QUICK))["fc.params"]
    via_params = by_component(measure(link, replace(QUICK, param_source="mavlink")))["fc.params"]
    assert via_ftp.source == "mavlink-ftp:@PARAM/param.pck" and via_params.source == "mavlink:PARAM_VALUE"
    assert via_ftp.digests == via_params.digests and via_ftp.claims["count"] == via_params.claims["count"] == 1368


def test_pinned_parameters_and_exclusions_are_claimed_as_the_appraisal_reads_them(link: Link) -> None:
    opts = replace(QUICK, pinned_params=("ARMING_CHECK", "SCR_ENABLE", "ATC_RAT_RLL_P", "NOT_A_PARAM"))
    m = by_component(measure(link, opts))["fc.params"]
    assert m.claims["param.SCR_ENABLE"] == 1 and m.claims["param.ARMING_CHECK"] == 1
    assert isinstance(m.claims["param.ATC_RAT_RLL_P"], float) and "param.NOT_A_PARAM" not in m.claims
    assert m.claims["exclude"] == ",".join(paramdigest.DEFAULT_EXCLUSIONS)


def test_a_malformed_param_pck_falls_back_to_the_param_protocol(link: Link, fc: VirtualFC) -> None:
    fc.files.param_pack = lambda read_size: b"\x1b\x67\x05\x00\x05\x00garbage"
    m = by_component(measure(link, QUICK))["fc.params"]
    assert m.source == "mavlink:PARAM_VALUE" and m.claims["count"] == 1368


def test_flash_is_read_in_full_then_checked_by_crc32_then_read_again_when_it_changes(
        link: Link, fc: VirtualFC, tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "image-cache.json")
    cold = by_component(measure(link, QUICK, cache))["fc.firmware-image"]
    assert cold.digests["sha256"] == hashlib.sha256(IMAGE).hexdigest() and cold.strength is Strength.FLASH_READ
    assert cold.claims["method"] == "full-read" and cold.source == "mavlink-ftp:@SYS/flash.bin"
    warm = by_component(measure(link, QUICK, ImageCache(tmp_path / "image-cache.json")))["fc.firmware-image"]
    assert warm.claims["method"] == "crc32-cached" and warm.digests == cold.digests
    assert warm.source == "mavlink-ftp-crc32:@SYS/flash.bin"
    fc.files.flash_image = IMAGE[:-1] + bytes([IMAGE[-1] ^ 1])
    changed = by_component(measure(link, QUICK, cache))["fc.firmware-image"]
    assert changed.claims["method"] == "full-read" and changed.digests != cold.digests
    stale = by_component(measure(link, replace(QUICK, full_read_interval=0), cache))["fc.firmware-image"]
    assert stale.claims["method"] == "full-read"


def test_an_oversized_flash_is_a_named_missing_measurement(link: Link) -> None:
    inv = measure(link, replace(QUICK, max_image_bytes=10_000))
    assert "fc.firmware-image" not in by_component(inv)
    assert [(p.code, p.component) for p in inv.problems] == [(Code.MEASUREMENT_MISSING, "fc.firmware-image")]
    assert "larger than the limit of 10000 bytes" in inv.problems[0].detail


def test_sitl_binary_is_measured_when_the_fc_is_sitl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "arducopter"
    binary.write_bytes(b"\x7fELF sitl")
    monkeypatch.setenv("FLIGHTSEAL_SITL_BINARY", str(binary))
    with VirtualFC(VfcConfig()) as sitl_like, Link.open(LinkConfig(sitl_like.url(1))) as lk:
        m = by_component(measure(lk, replace(QUICK, use_sitl_env=True)))["fc.firmware-image"]
    assert m.source == f"file:{binary}" and m.strength is Strength.IMAGE_AND_BOOTLOADER
    assert m.claims["sitl"] is True and m.digests["sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    with VirtualFC(VfcConfig(firmware=FirmwareInfo(board_id=140))) as board, Link.open(LinkConfig(board.url(1))) as lk:
        inv = measure(lk, replace(QUICK, use_sitl_env=True))
    assert "fc.firmware-image" not in by_component(inv)  # a board without flash.bin is not SITL


def test_an_oversized_script_cannot_pass_as_an_approved_one(link: Link, fc: VirtualFC) -> None:
    (fc.scripts_dir / "big.lua").write_bytes(b"-- " + b"x" * 5000)
    inv = measure(link, replace(QUICK, max_script_bytes=4096))
    m = by_component(inv)["fc.script:scripts/big.lua"]
    assert m.digests == {} and "larger than the limit" in str(m.claims["error"])
    assert any(p.component == "fc.script:scripts/big.lua" for p in inv.problems)


def test_an_fc_without_ftp_still_gives_identity_and_parameters_and_fails_closed_on_scripts() -> None:
    with VirtualFC(VfcConfig(ftp_enabled=False)) as vfc, Link.open(LinkConfig(vfc.url(1))) as lk:
        start = time.monotonic()
        inv = measure(lk, QUICK, ftp_limits=FtpLimits(reply_timeout=0.2, retries=1))
        assert time.monotonic() - start < 3.0
    got = by_component(inv)
    assert got["fc.params"].source == "mavlink:PARAM_VALUE" and "fc.firmware" in got
    assert got["fc.script:*"].digests == {}
    assert {p.component for p in inv.problems} >= {"fc.ftp", "fc.firmware-image"}


def test_a_silent_fc_is_a_clear_error_not_a_hang() -> None:
    from agent.mavlink.link import FcSilent

    with VirtualFC(VfcConfig(silent=True)) as vfc, pytest.raises(FcSilent):
        Link.open(LinkConfig(vfc.url(1), heartbeat_timeout=0.3))


def test_parts_on_the_bus_are_measured_and_ground_stations_are_not() -> None:
    camera_fw = FirmwareInfo(vendor_id=0x2DAE, product_id=0x1016, uid2=bytes.fromhex("c0ffee"), git_hash="cam12345")
    config = VfcConfig(components=(BusComponent(1, 100, 30, version=camera_fw), BusComponent(1, 154, 26),
                                   BusComponent(51, 68, 0, heartbeat=False), BusComponent(255, 190, 6)),
                       dronecan_nodes=(DroneCanNode(125, "com.cubepilot.here3", bytes(range(16)), (2, 1), (1, 13),
                                                    0xAB12CD34, 0x1122334455667788),))
    with VirtualFC(config) as vfc, Link.open(LinkConfig(vfc.url(1))) as lk:
        start = time.monotonic()
        got = by_component(measure(lk, replace(QUICK, listen_time=1.2)))
        assert time.monotonic() - start < 4.0
    camera, gimbal, radio, gps = (got["mavlink:1/100"], got["mavlink:1/154"], got["mavlink:51/68"],
                                  got["dronecan:1/125"])
    assert camera.claims["type"] == "camera" and camera.claims["vendor_id"] == 0x2DAE
    assert camera.claims["hardware_id"] == "c0ffee" and camera.strength is Strength.SELF_REPORTED
    assert gimbal.claims["type"] == "gimbal" and gimbal.strength is Strength.OBSERVED  # did not answer: bounded
    assert radio.claims["type"] == "radio"
    assert gps.claims["model"] == "com.cubepilot.here3" and gps.claims["vendor"] == "cubepilot"
    assert gps.claims["hardware_id"] == bytes(range(16)).hex() and gps.claims["sw_version"] == "1.13"
    assert gps.claims["vcs_commit"] == "ab12cd34" and gps.digests == {"crc64": "1122334455667788"}
    assert gps.strength is Strength.SELF_REPORTED and gps.source == "dronecan:GetNodeInfo"
    assert not any(c.startswith("dronecan:1/10") for c in got), "the FC's own node is not a part"
    assert "mavlink:255/190" not in got and "mavlink:1/1" not in got and "mavlink:1/191" not in got
    assert all(m.kind is Kind.COMPONENT for c, m in got.items() if c.startswith(("mavlink:", "dronecan:")))


def test_a_dronecan_node_answering_in_can_fd_frames_is_measured_the_same() -> None:
    node = DroneCanNode(42, "com.acme.gps", bytes(range(16)), sw_version=(1, 4), image_crc=0x1122334455667788,
                        canfd=True)
    with VirtualFC(VfcConfig(dronecan_nodes=(node,))) as vfc, Link.open(LinkConfig(vfc.url(1))) as lk:
        got = by_component(measure(lk, QUICK))
    gps = got["dronecan:1/42"]
    assert gps.digests == {"crc64": "1122334455667788"} and gps.claims["model"] == "com.acme.gps"


def test_a_node_that_never_answers_is_still_a_part_on_the_bus() -> None:
    node = DroneCanNode(42, "com.acme.gps", answers=False)
    with VirtualFC(VfcConfig(dronecan_nodes=(node,))) as vfc, Link.open(LinkConfig(vfc.url(1))) as lk:
        start = time.monotonic()
        got = by_component(measure(lk, QUICK))
        assert time.monotonic() - start < 8.0, "bounded: two unanswered questions, then on"
    gps = got["dronecan:1/42"]
    assert gps.strength is Strength.OBSERVED and gps.digests == {} and gps.source == "dronecan:NodeStatus"


def test_an_fc_without_dronecan_gets_no_can_forwarding_request() -> None:
    with VirtualFC(VfcConfig()) as vfc, Link.open(LinkConfig(vfc.url(1))) as lk:
        measure(lk, QUICK)
    assert not [c for c in vfc.commands if c == 32000], "its parameters say there is no DroneCAN bus"
    assert not [r for r in vfc.received if r[1] in ("CAN_FRAME", "CAN_FILTER_MODIFY")]


def test_companion_digest_covers_the_agent_config(link: Link, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[device]\nid = 'a'\n")
    first = by_component(measure(link, replace(QUICK, companion_config=config)))
    config.write_text("[device]\nid = 'b'\n")
    second = by_component(measure(link, replace(QUICK, companion_config=config)))
    assert first["companion.agent"].digests != second["companion.agent"].digests
    assert first["companion.os"].digests == second["companion.os"].digests
    assert first["companion.agent"].claims["files"] > 20 and first["companion.os"].claims["kernel"]


def manifest_for(inv: Inventory, **changes: object) -> Manifest:
    got = by_component(inv)
    ident, image, params = got["fc.firmware"], got["fc.firmware-image"], got["fc.params"]
    scripts = tuple(Script(str(m.claims["path"]), m.digests["sha256"], required=True)
                    for m in inv.measurements if m.kind is Kind.SCRIPT)
    base = Manifest(
        version=1, expires=datetime.now(UTC) + timedelta(days=1),
        airframe=Airframe("vfc-quad", board_ids=(int(ident.claims["board_id"]),), fc_uids=(str(ident.claims["uid"]),)),
        firmware=(Firmware("arducopter", "4.7.0", str(ident.claims["git_hash"]), int(ident.claims["board_id"]), 1,
                           image.digests["sha256"]),),
        scripts=scripts,
        params=ParamPolicy(pinned={"SCR_ENABLE": 1.0}, digest=params.digests["sha256"]),
        components=(ApprovedComponent("companion", "companion.*", "", "", "DE"),),
        min_strength={Kind.FIRMWARE_IMAGE: Strength.FLASH_READ},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_measured_airframe_passes_its_manifest_and_fails_each_tampering_with_a_named_reason(
        link: Link, fc: VirtualFC) -> None:
    opts = replace(QUICK, pinned_params=("SCR_ENABLE",))
    inv = measure(link, opts)
    manifest = manifest_for(inv)
    assert appraise(inv.measurements, manifest).passed
    (fc.scripts_dir / "evil.lua").write_bytes(b"-- not approved\n")
    fc.set_param("SCR_ENABLE", 0)
    fc.files.flash_image = IMAGE + b"\0"
    verdict = appraise(measure(link, opts).measurements, manifest)
    assert set(verdict.codes) == {Code.SCRIPT_UNKNOWN, Code.PARAM_PINNED, Code.PARAM_MISMATCH, Code.FIRMWARE_MISMATCH}


def test_param_pck_content_matches_what_param_value_says(link: Link, fc: VirtualFC) -> None:
    assert fc.wait_for(lambda: not fc.booting, 2)
    data = fc.files.param_pack(239)
    assert decode(data).values()["RTL_ALT"] == fc.get_param("RTL_ALT")


def test_a_pass_right_after_a_reboot_waits_for_the_fc_to_finish_booting() -> None:
    with VirtualFC(VfcConfig(standby_delay=1.0)) as vfc, Link.open(LinkConfig(vfc.url(1))) as lk:
        before = by_component(measure(lk, QUICK))["fc.params"]
        lk.reboot_fc(timeout=5)
        hasty = measure(lk, replace(QUICK, boot_wait=0))
        assert any(p.component == "fc" and "still booting" in p.detail for p in hasty.problems)
        # param.pck did not add up while booting (its count was still growing): the hasty pass fell
        # back to the PARAM protocol, whose result depends on when the count settles
        assert by_component(hasty)["fc.params"].claims["method"] == "param-protocol"
        lk.reboot_fc(timeout=5)
        start = time.monotonic()
        patient = measure(lk, QUICK)
        assert time.monotonic() - start >= 0.7 and not any(p.component == "fc" for p in patient.problems)
        assert by_component(patient)["fc.params"].claims["method"] == "param.pck"
        assert by_component(patient)["fc.params"].digests == before.digests
