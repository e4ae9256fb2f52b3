"""End to end on the virtual FC running the real Lua gate: the agent decides whether the drone arms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hardware.software import SoftwareSigner
from sim.scenarios.rig import GATE_KEY, Gcs, Rig, gate_scripts
from sim.vfc.config import BusComponent, DroneCanNode, FirmwareInfo, VfcConfig
from sim.vfc.lua_host import LuaScriptingAuthority
from sim.vfc.server import VirtualFC

IMAGE = b"\x00\x10\x00\x20 virtual FC firmware image " * 2048


@dataclass
class World:
    rig: Rig
    fc: VirtualFC
    gcs: Gcs


CAMERA = BusComponent(1, 100, 30, version=FirmwareInfo(git_hash="c0ffee00", vendor_id=0x1234, product_id=7,
                                                           uid=0x1122334455))


def make_world(tmp_path, parts=None, components=(), dronecan=()) -> World:  # type: ignore[no-untyped-def]
    fc = VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=IMAGE, prearm_period=1.0,
                             components=components, dronecan_nodes=dronecan), authority=LuaScriptingAuthority()).start()
    rig = Rig(tmp_path, fc.url(1), fc.url(0), SoftwareSigner.generate(), parts=dict(parts or {}), gate_key=GATE_KEY)
    rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
    return World(rig, fc, Gcs(fc.url(0)))


def close(w: World) -> None:
    w.gcs.close()
    w.rig.stop_agent()
    w.fc.stop()


@pytest.fixture
def world(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = make_world(tmp_path)
    try:
        yield w
    finally:
        close(w)


def test_approved_airframe_arms(world: World) -> None:
    assert not world.gcs.arm().accepted, "the gate blocks from boot"
    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    result = world.gcs.arm()
    assert result.accepted, result


def refused_with(world: World, code: str, text: str | None = None) -> None:
    world.rig.wait_verdict(passed=False, code=code)
    result = world.gcs.arm()
    assert not result.accepted, result
    text = text or f"FlightSeal: {code}"[:41]
    assert text in result.text, result
    assert world.fc.wait_for(lambda: any(t == f"PreArm: {text}" for _, t in world.fc.texts), 3.0), \
        "the pilot sees the reason in the periodic PreArm text"


def test_tampered_lua_script_refuses_arming(world: World) -> None:
    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    (world.fc.scripts_dir / "evil.lua").write_bytes(b"-- exfiltrate telemetry\nreturn function() end\n")
    refused_with(world, "script-unknown")


def test_changed_pinned_parameter_refuses_arming(world: World) -> None:
    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    world.fc.set_param("FS_THR_ENABLE", 0)
    refused_with(world, "param-pinned", "FlightSeal: pinned FS_THR_ENABLE")


def test_firmware_not_in_manifest_refuses_arming(world: World) -> None:
    from dataclasses import replace

    m = world.rig.baseline_manifest(world.rig.measure_fc())
    world.rig.sign_manifest(replace(m, firmware=tuple(replace(f, git_hash="deadbeef") for f in m.firmware)))
    world.rig.start_agent()
    refused_with(world, "firmware-mismatch")


def test_expired_manifest_refuses_arming(world: World) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from attest import timeutil

    m = world.rig.baseline_manifest(world.rig.measure_fc())
    world.rig.sign_manifest(replace(m, expires=timeutil.now() - timedelta(minutes=1)))
    world.rig.start_agent()
    refused_with(world, "manifest-expired")


def test_manifest_below_threshold_refuses_arming(world: World) -> None:
    m = world.rig.baseline_manifest(world.rig.measure_fc())
    world.rig.sign_manifest(m, signers=world.rig.makers[:1])
    world.rig.start_agent()
    refused_with(world, "manifest-threshold")


def test_rollback_to_older_manifest_refuses_arming(world: World) -> None:
    ms = world.rig.measure_fc()
    world.rig.sign_manifest(world.rig.baseline_manifest(ms, version=5))
    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    world.rig.sign_manifest(world.rig.baseline_manifest(ms, version=4))  # validly signed, but older
    refused_with(world, "manifest-rollback")


def test_wrong_airframe_refuses_arming(world: World) -> None:
    from dataclasses import replace

    m = world.rig.baseline_manifest(world.rig.measure_fc())
    world.rig.sign_manifest(replace(m, airframe=replace(m.airframe, board_ids=(140,))))
    world.rig.start_agent()
    refused_with(world, "wrong-hardware")


def test_stopped_agent_lets_the_gate_lapse_to_blocked(world: World) -> None:
    import time

    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    assert world.gcs.arm().accepted
    assert world.gcs.disarm().accepted
    world.rig.stop_agent()
    time.sleep(3.5)
    result = world.gcs.arm()
    assert not result.accepted and "lapsed" in result.text, result


def test_armed_vehicle_is_never_measured_nor_disarmed_and_next_arming_is_refused(world: World) -> None:
    import time

    world.rig.start_agent()
    daemon = world.rig.wait_verdict(passed=True)
    assert world.gcs.arm().accepted
    time.sleep(1.2)  # the FC's next heartbeat tells the agent it is armed
    passes = daemon.status.passes
    world.fc.set_param("FS_THR_ENABLE", 0)
    time.sleep(2.0)
    assert world.fc.armed, "a change in flight must not disarm"
    assert daemon.status.passes == passes, "an armed vehicle must not be measured"
    assert world.gcs.disarm().accepted
    quick = world.gcs.arm()  # re-arming at once, before the agent re-attested, is refused too
    assert not quick.accepted and "FlightSeal:" in quick.text, quick
    world.rig.wait_verdict(passed=False, code="param-pinned")
    result = world.gcs.arm()
    assert not result.accepted and "FlightSeal: pinned FS_THR_ENABLE" in result.text, result
    assert b'"kind":"deferred-in-flight"' in (world.rig.workdir / "state" / "audit.log").read_bytes()


def test_forged_pass_from_the_gcs_link_is_ignored(world: World) -> None:
    from pymavlink import mavutil

    from agent.gate.client import Sequence, encode_verdict
    from attest.models import Verdict

    # another node on the GCS port claims the agent's ids and sends a well-formed pass (without the gate key)
    forger = mavutil.mavlink_connection(world.fc.url(0).replace("tcp:", "tcp:"), source_system=1, source_component=191)
    try:
        world.gcs.close()
        forger.wait_heartbeat(timeout=5)
        forger.mav.send(encode_verdict(Verdict(passed=True), Sequence(2**30, 1), bytes(32)))
        import time

        time.sleep(0.5)
    finally:
        forger.close()
    world.gcs = Gcs(world.fc.url(0))
    result = world.gcs.arm()
    assert not result.accepted and "waiting" in result.text, result


def test_operator_challenge_through_the_fc_verifies_offline(world: World) -> None:
    import secrets

    from click.testing import CliRunner

    from agent.challenge import request_attestation
    from agent.cli.main import main

    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    nonce = secrets.token_bytes(32)
    data = request_attestation(world.gcs.conn, nonce, timeout=15)
    att = world.rig.workdir / "challenge.json"
    att.write_bytes(data)
    r = CliRunner().invoke(main, ["verify", str(att), "--trust", str(world.rig.trust_dir), "--nonce", nonce.hex(),
                                  "--allow-software-keys"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["verify", str(att), "--trust", str(world.rig.trust_dir), "--nonce", nonce.hex()])
    assert r.exit_code == 1 and "software-key" in r.output


def test_arming_check_zero_bypasses_the_gate_as_on_ardupilot_and_the_agent_reports_it(world: World) -> None:
    """A known limit (ADR 0005): ArduCopter skips Lua aux auth when ARMING_CHECK=0. The manifest pins
    ARMING_CHECK, so the agent's verdict and every attestation show the change at once."""
    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    world.fc.set_param("ARMING_CHECK", 0)
    world.rig.wait_verdict(passed=False, code="param-pinned")
    assert world.gcs.arm().accepted, "ArduPilot's behaviour: with ARMING_CHECK=0 no Lua check runs"


@pytest.fixture
def camera_world(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    from attest.baseline import PartInfo

    origin = {"unknown": None, "denied": "XX"}
    w: World | None = None

    def build(kind: str) -> World:
        nonlocal w
        parts = {} if origin[kind] is None else {"mavlink:1/100": PartInfo("gimbal camera", "Acme", "AC-1",
                                                                           str(origin[kind]))}
        w = make_world(tmp_path, parts=parts, components=(CAMERA,))
        return w

    yield build  # type: ignore[misc]
    if w is not None:
        close(w)


def test_unapproved_camera_on_the_bus_refuses_arming(camera_world) -> None:  # type: ignore[no-untyped-def]
    w = camera_world("unknown")
    w.rig.start_agent()
    refused_with(w, "component-unknown")


def test_part_from_a_denied_origin_refuses_arming(camera_world) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    w = camera_world("denied")
    m = w.rig.baseline_manifest(w.rig.measure_fc())
    w.rig.sign_manifest(replace(m, deny_origins=("XX",)))
    w.rig.start_agent()
    refused_with(w, "component-denied-origin")


def test_replayed_earlier_pass_on_the_agent_link_is_ignored(world: World) -> None:
    import time

    from pymavlink import mavutil

    from agent.gate.client import DENIED, Sequence, decode_ack, encode_verdict
    from attest.models import Verdict

    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    assert world.rig.daemon is not None
    epoch = world.rig.daemon.sequence.epoch
    assert world.rig.daemon.gate is not None
    nonce = world.rig.daemon.gate.nonce
    world.rig.stop_agent()
    time.sleep(3.5)  # the pass lapses
    # someone on the agent's own link replays a pass the gate already took (this load's nonce, counter 1)
    replayer = mavutil.mavlink_connection(world.rig.fc_url, source_system=1, source_component=191)
    try:
        replayer.wait_heartbeat(timeout=5)
        replayer.mav.send(encode_verdict(Verdict(passed=True), Sequence(epoch, 1), GATE_KEY, nonce))
        msg = replayer.recv_match(type="TUNNEL", blocking=True, timeout=2)
        ack = decode_ack(msg, GATE_KEY) if msg is not None else None
        assert ack is not None and ack.result == DENIED, ack  # not newer than what the gate took
    finally:
        replayer.close()
    result = world.gcs.arm()
    assert not result.accepted and "lapsed" in result.text, result


def test_manifest_expiring_while_the_agent_runs_refuses_the_next_arming(world: World) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from attest import timeutil

    m = world.rig.baseline_manifest(world.rig.measure_fc())
    world.rig.sign_manifest(replace(m, expires=timeutil.now() + timedelta(seconds=3)))
    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    refused_with(world, "manifest-expired")


def test_newer_manifest_is_remembered_even_when_the_airframe_fails_it(world: World) -> None:
    from dataclasses import replace

    ms = world.rig.measure_fc()
    strict = world.rig.baseline_manifest(ms, version=7)
    world.rig.sign_manifest(replace(strict, firmware=tuple(replace(f, git_hash="deadbeef") for f in strict.firmware)))
    world.rig.start_agent()
    world.rig.wait_verdict(passed=False, code="firmware-mismatch")
    world.rig.sign_manifest(world.rig.baseline_manifest(ms, version=6))  # older, though it would pass
    refused_with(world, "manifest-rollback")


def test_parameter_change_read_by_another_consumer_still_marks_the_agent_dirty(world: World) -> None:
    """While measuring, the FTP client reads the link and drops what it does not want; a parameter
    change notified then must still reach the agent, or the verdict would stay stale."""
    from agent.daemon import Daemon

    daemon = Daemon(world.rig.config(), world.rig.device)
    daemon._connect()
    try:
        assert daemon.link is not None
        daemon._dirty = None
        world.fc.set_param("FS_THR_ENABLE", 0)
        daemon.link.recv(["COMMAND_ACK"], timeout=1.5)  # a collector waiting for something else
        assert daemon._dirty == "parameter FS_THR_ENABLE changed"
    finally:
        daemon._close()


def test_tpm_lost_mid_flight_blocks_the_next_arming_instead_of_keeping_an_old_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import time

    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (scripts/install.sh installs it)")
    from hardware.tpm import create_key
    from sim.launchers.swtpm import Swtpm

    with Swtpm() as tpm:
        signer = create_key(tpm.key_uri(0x81010100))
        w = World(*_world_parts(tmp_path, signer))
        try:
            w.rig.start_agent()
            w.rig.wait_verdict(passed=True)
            assert w.gcs.arm().accepted and w.gcs.disarm().accepted
            time.sleep(1.2)  # the FC's next heartbeat tells the agent it is on the ground again
            tpm.stop()  # the TPM goes away; the next change cannot be sealed
            w.fc.set_param("FS_THR_ENABLE", 0)
            deadline = time.monotonic() + 15
            while True:
                result = w.gcs.arm()
                if result.accepted:
                    w.gcs.disarm()
                elif "FlightSeal: measurement-missing" in result.text:
                    break
                assert time.monotonic() < deadline, f"the old pass was kept alive: {result}"
                time.sleep(0.3)
            audit = tmp_path / "state" / "audit.log"
            while b'"kind":"pass-failed"' not in audit.read_bytes():
                assert time.monotonic() < deadline, "the failed pass was not audited"
                time.sleep(0.1)
        finally:
            w.gcs.close()
            w.rig.stop_agent()
            w.fc.stop()


def _world_parts(tmp_path, signer):  # type: ignore[no-untyped-def]
    fc = VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=IMAGE, prearm_period=1.0),
                   authority=LuaScriptingAuthority()).start()
    rig = Rig(tmp_path, fc.url(1), fc.url(0), signer, gate_key=GATE_KEY)
    rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
    return rig, fc, Gcs(fc.url(0))


GPS = DroneCanNode(42, "com.acme.gps", bytes(range(16)), (2, 1), (1, 4), 0x1A2B3C4D, 0x1122334455667788)


@pytest.fixture
def gps_world(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    from attest.baseline import PartInfo

    w = make_world(tmp_path, parts={"dronecan:1/42": PartInfo("GNSS", "acme", "com.acme.gps", "JP")},
                   dronecan=(GPS,))
    try:
        yield w
    finally:
        close(w)


def test_approved_dronecan_gps_arms(gps_world: World) -> None:
    gps_world.rig.start_agent()
    gps_world.rig.wait_verdict(passed=True)
    assert gps_world.gcs.arm().accepted


def test_dronecan_gps_reflashed_with_unapproved_firmware_refuses_arming(gps_world: World) -> None:
    from dataclasses import replace

    assert gps_world.fc.can_bus is not None
    gps_world.fc.can_bus.put(replace(GPS, image_crc=0x0BADC0DE0BADC0DE))  # same part, other build
    gps_world.rig.start_agent()
    refused_with(gps_world, "component-mismatch")


def test_unapproved_dronecan_node_refuses_arming(gps_world: World) -> None:
    assert gps_world.fc.can_bus is not None
    gps_world.fc.can_bus.put(DroneCanNode(77, "org.unknown.tracker", bytes(16), sw_version=(9, 9)))
    gps_world.rig.start_agent()
    refused_with(gps_world, "component-unknown")


def test_dronecan_node_plugged_in_after_a_pass_refuses_the_next_arming(gps_world: World) -> None:
    gps_world.rig.start_agent()
    gps_world.rig.wait_verdict(passed=True)
    assert gps_world.fc.can_bus is not None
    gps_world.fc.can_bus.put(DroneCanNode(77, "org.unknown.tracker", bytes(16)))  # no MAVLink traffic at all
    refused_with(gps_world, "component-unknown")


def test_dronecan_part_reflashed_after_a_pass_is_seen_by_its_restart(gps_world: World) -> None:
    from dataclasses import replace

    gps_world.rig.start_agent()
    gps_world.rig.wait_verdict(passed=True)
    time.sleep(2.5)  # the node has been up a while: its restart is a step back in uptime
    assert gps_world.fc.can_bus is not None
    gps_world.fc.can_bus.put(replace(GPS, image_crc=0x0BADC0DE0BADC0DE))  # same id, other build, uptime 0
    refused_with(gps_world, "component-mismatch")
