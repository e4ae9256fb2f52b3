"""Issue 11: traffic on the agent's link that must not make it work for nothing (vFC, real Lua gate)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_agent_e2e import World, close, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    try:
        yield w
    finally:
        close(w)


def test_setting_a_parameter_to_its_own_value_or_reading_it_starts_no_pass(world: World) -> None:
    """ArduPilot answers a PARAM_SET of an unchanged value, and every read, with a PARAM_VALUE: it used
    to force a full pass each time (60 passes in 30 s)."""
    world.rig.start_agent()
    daemon = world.rig.wait_verdict(passed=True)
    passes = daemon.status.passes
    for _ in range(10):
        world.gcs.set_param("FS_THR_ENABLE", 1)
        assert world.gcs.get_param("RTL_ALT") is not None
    time.sleep(2.0)
    assert daemon.status.passes == passes, daemon.status.transitions[-4:]
    world.gcs.set_param("FS_THR_ENABLE", 0)
    world.rig.wait_verdict(passes=passes + 1, passed=False, code="param-pinned", timeout=20)


def test_a_pass_longer_than_the_gates_lapse_never_lets_the_verdict_lapse(tmp_path: Path) -> None:
    """Issue 11: no keep-alive went out while a pass ran, so a pass over 3 s dropped a valid pass (and
    hostile traffic makes passes long). Now the verdict in force is kept alive, and a pass that a
    change started is announced ("re-attesting"): it ends only by the agent's decision."""
    import dataclasses

    from hardware.software import SoftwareSigner
    from sim.scenarios.rig import GATE_KEY, Gcs, Rig, gate_scripts
    from sim.vfc.config import VfcConfig
    from sim.vfc.lua_host import LuaScriptingAuthority
    from sim.vfc.server import VirtualFC
    image = b"\x00\x10\x00\x20 small image " * 128
    with VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=image, prearm_period=1.0,
                             ftp_link_bps=5000), authority=LuaScriptingAuthority()) as fc:
        rig = Rig(tmp_path, fc.url(1), fc.url(0), SoftwareSigner.generate(), gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        gcs = Gcs(fc.url(0))
        try:
            cfg = rig.config()  # no script read-backs competing for the slow link
            cfg = dataclasses.replace(cfg, measure=dataclasses.replace(cfg.measure, script_poll_s=600.0,
                                                                       script_hash_s=600.0))
            daemon = rig.start_agent(cfg)
            rig.wait_verdict(passed=True, timeout=120)
            assert gcs.arm().accepted and gcs.disarm().accepted
            _settled_on_a_pass(daemon)  # a pass the arm and disarm started has ended: a PASS is in force, idle
            passes = daemon.status.passes
            gcs.set_param("RTL_ALT", 2500)  # a change: the pass it starts reads param.pck slowly
            deadline = time.monotonic() + 30  # the agent hears it between its slow script read-backs
            while daemon.status.state.value != "measure" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert daemon.status.state.value == "measure", daemon.status.transitions[-3:]
            texts = []
            deadline = time.monotonic() + 120
            while daemon.status.passes == passes and time.monotonic() < deadline:
                result = gcs.arm()
                assert not result.accepted, ("a changed airframe armed during its re-attestation",
                                             daemon.status.state, daemon.status.transitions[-5:], texts)
                texts.append(result.text)
                time.sleep(0.5)
            assert len(texts) >= 8, f"the pass took {len(texts) / 2:.1f} s: not longer than the 3 s lapse"
            assert not any("lapsed" in t for t in texts), texts
            assert any("FlightSeal: re-attesting" in t for t in texts), (texts, daemon.status.transitions[-8:])
        finally:
            gcs.close()
            rig.stop_agent()


def test_the_agent_refuses_a_root_older_than_one_it_trusted(tmp_path: Path) -> None:
    import json

    from agent.daemon import Daemon
    from attest.errors import RollbackError
    from hardware.software import SoftwareSigner
    from sim.scenarios.rig import Rig

    rig = Rig(tmp_path, "tcp:127.0.0.1:9", "tcp:127.0.0.1:9", SoftwareSigner.generate())
    Daemon(rig.config(), rig.device)  # records root version 1
    state = tmp_path / "state" / "root-state.json"
    assert json.loads(state.read_text())["version"] == 1
    state.write_text(json.dumps({"version": 5, "sha256": "ab" * 32}))  # a newer root was trusted before
    with pytest.raises(RollbackError, match="root version 1 is older than version 5"):
        Daemon(rig.config(), rig.device)


def test_a_manifest_for_another_airframe_is_not_recorded_and_cannot_make_ours_a_rollback(world: World) -> None:
    """Issue 11: a high-version manifest for another airframe was recorded before its binding was
    checked, and the real one then counted as a rollback."""
    import dataclasses
    import json

    from attest.manifest import Airframe

    real = world.rig.baseline_manifest(world.rig.measure_fc())
    world.rig.sign_manifest(dataclasses.replace(real, version=9, airframe=Airframe("FS-Hexa-9")))
    world.rig.start_agent()
    daemon = world.rig.wait_verdict(passed=False, code="wrong-hardware", timeout=20)  # it used to PASS
    assert not world.gcs.arm().accepted
    state = world.rig.workdir / "state" / "manifest-state.json"
    assert not state.exists() or json.loads(state.read_text())["version"] != 9
    passes = daemon.status.passes
    world.rig.sign_manifest(real)  # version 1, for this airframe
    world.rig.wait_verdict(passes=passes + 1, passed=True, timeout=20)


def test_one_spoofed_heartbeat_from_another_component_does_not_stick(world: World) -> None:
    """Issue 11: one HEARTBEAT from a made-up component gave component-unknown until the agent
    reconnected. Now the part is left out once it has not been heard for component_gone_s."""
    world.rig.start_agent()
    daemon = world.rig.wait_verdict(passed=True)
    passes = daemon.status.passes
    world.gcs.conn.mav.srcSystem, world.gcs.conn.mav.srcComponent = 42, 1
    world.gcs.conn.mav.heartbeat_send(30, 8, 0, 0, 4)  # a "camera" heard once
    world.gcs.conn.mav.srcSystem, world.gcs.conn.mav.srcComponent = 255, 190
    world.rig.wait_verdict(passes=passes + 1, passed=False, code="component-unknown", timeout=20)
    world.rig.wait_verdict(passes=passes + 2, passed=True, timeout=30)
    assert any("component 42/1 no longer heard" in t for t in daemon.status.transitions)


def _spoofing(router, base_mode: int, stop, every: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    from pymavlink.dialects.v20 import ardupilotmega as mavlink

    while not stop.wait(every):
        router.inject(mavlink.MAVLink_heartbeat_message(2, 3, base_mode, 0, 4, 3), 1, 1)  # "the FC"


@pytest.fixture
def routed(world: World) -> Iterator[tuple[World, object]]:
    """The agent behind a companion router whose other client can send frames as anyone."""
    from dataclasses import replace

    from tests.router import Router

    router = Router(int(world.fc.url(1).rsplit(":", 1)[1]))
    cfg = world.rig.config()
    world.rig.start_agent(replace(cfg, mavlink=replace(cfg.mavlink, url=router.url)))
    try:
        yield world, router
    finally:
        world.rig.stop_agent()
        router.close()


def test_spoofed_armed_heartbeats_do_not_keep_the_agent_from_re_attesting(routed) -> None:  # type: ignore[no-untyped-def]
    """Issue 11: HEARTBEATs as the FC with the armed bit made the agent defer every pass for ever.
    The gate's acks say armed or not under the gate key; the agent believes them."""
    import threading

    from agent.audit import scan

    world, router = routed
    daemon = world.rig.wait_verdict(passed=True)
    passes = daemon.status.passes
    stop = threading.Event()
    spoofer = threading.Thread(target=_spoofing, args=(router, 128 | 64 | 16 | 1, stop), daemon=True)
    spoofer.start()
    try:
        time.sleep(1.0)
        world.rig.manifest_path.touch()  # something to re-attest: the manifest file changed
        world.rig.wait_verdict(passes=passes + 1, passed=True, timeout=20)
    finally:
        stop.set()
        spoofer.join(timeout=5)
    assert scan(world.rig.workdir / "state" / "audit.log").records
    kinds = [json.loads(line)["kind"] for line in (world.rig.workdir / "state" / "audit.log").read_text().splitlines()]
    assert "fc-heartbeat-spoofed" in kinds
    deadline = time.monotonic() + 5  # the FC's arming checks see the gate's new state within a second
    while not (r := world.gcs.arm()).accepted and time.monotonic() < deadline:
        time.sleep(0.3)
    assert r.accepted, f"the re-attested pass is in force: {r} {daemon.status.transitions[-8:]} {kinds[-5:]}"
    world.gcs.disarm()


def test_spoofed_disarmed_heartbeats_do_not_get_a_flying_vehicle_measured(routed) -> None:  # type: ignore[no-untyped-def]
    """The other way round: the vehicle is armed, a spoofer says it is not; the agent goes by the
    gate's word, defers the pass (fail verdict for the next arming) and measures after landing."""
    import threading

    world, router = routed
    daemon = world.rig.wait_verdict(passed=True)
    passes = daemon.status.passes
    assert world.gcs.arm().accepted
    stop = threading.Event()
    spoofer = threading.Thread(target=_spoofing, args=(router, 64 | 16 | 1, stop, 0.05), daemon=True)
    spoofer.start()
    try:
        time.sleep(2.0)  # the gate's next acks say armed
        world.rig.manifest_path.touch()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not any("while armed" in t or "changed in flight" in t
                                                      for t in daemon.status.transitions):
            if daemon.status.passes > passes:
                break
            time.sleep(0.1)
        assert daemon.status.passes == passes, "measured while armed: " + "; ".join(daemon.status.transitions[-4:])
        assert daemon._deferred == "manifest file changed"
    finally:
        stop.set()
        spoofer.join(timeout=5)
        world.gcs.disarm()
    world.rig.wait_verdict(passes=passes + 1, passed=True, timeout=20)


def test_heartbeats_from_made_up_ids_cost_one_bounded_pass_per_interval(routed) -> None:  # type: ignore[no-untyped-def]
    """Issue 11: every HEARTBEAT from a new id started a pass at once, and each silent part added a
    version request's wait to it. Now component passes are coalesced (COMPONENT_PASS_MIN_S) and the
    parts are asked their version all at once, so a flood costs a bounded number of short passes; the
    arming gate is held meanwhile, and when the made-up parts fall silent the airframe passes again."""
    from pymavlink.dialects.v20 import ardupilotmega as mavlink

    from agent.daemon import COMPONENT_PASS_MIN_S

    world, router = routed
    daemon = world.rig.wait_verdict(passed=True)
    passes, start = daemon.status.passes, time.monotonic()
    sent = 0
    while time.monotonic() - start < 6.0:
        for _ in range(5):
            sent += 1
            router.inject(mavlink.MAVLink_heartbeat_message(30, 8, 0, 0, 4, 3), 100 + sent % 150, 1 + sent // 150)
        time.sleep(0.05)
    flood_s = time.monotonic() - start
    assert not world.gcs.arm().accepted, "parts nobody approved are on the bus: no arming"
    ran = daemon.status.passes - passes
    assert 1 <= ran <= flood_s / COMPONENT_PASS_MIN_S + 2, f"{ran} passes for {sent} made-up parts in {flood_s:.1f} s"
    world.rig.wait_verdict(passes=daemon.status.passes + 1, passed=True, timeout=40)


def test_line_noise_makes_no_phantom_part(routed) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzz campaign: a MAVLink1 start byte followed by junk decodes as UNKNOWN_n from
    0/0 (pymavlink cannot check the CRC of an id it does not know), and the agent listed a part
    "mavlink:0/0" in almost every pass. Noise is now dropped like a bad CRC."""
    world, router = routed
    daemon = world.rig.wait_verdict(passed=True)
    passes = daemon.status.passes
    for i in range(50):
        router.inject_raw(bytes([0xFE, 9, i, 0, 0, 200 + i % 50]) + bytes(range(i % 7, i % 7 + 11)) + bytes(300))
        time.sleep(0.02)
    time.sleep(1.0)
    assert daemon.link is not None and (0, 0) not in daemon.link.heard, sorted(daemon.link.heard)
    world.rig.manifest_path.touch()
    world.rig.wait_verdict(passes=passes + 1, passed=True, timeout=20)


def _settled_on_a_pass(daemon: object, quiet_s: float = 2.0, timeout: float = 90.0) -> None:
    """Wait until the agent watches with a PASS delivered and no change pending, for ``quiet_s`` in a row."""
    status = daemon.status  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        settled = (status.state.value == "watch" and status.delivered is not None and status.delivered.verdict.passed
                   and daemon._dirty is None)  # type: ignore[attr-defined]
        now = time.monotonic()
        quiet_since = (quiet_since or now) if settled else None
        if quiet_since is not None and now - quiet_since >= quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError(f"the agent never settled on a pass: {status.transitions[-8:]}")

