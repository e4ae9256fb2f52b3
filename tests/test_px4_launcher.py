"""The PX4 SITL launcher: PX4 comes up heartbeating on the onboard link, presets stick, stop cleans up."""

from __future__ import annotations

import os

import pytest
from pymavlink import mavutil

from sim.launchers.px4 import Px4Sitl, Px4SitlError, px4_from_env
from tests.px4_fixtures import PX4_SKIP_REASON

os.environ.setdefault("MAVLINK20", "1")

pytest_plugins = ["tests.px4_fixtures"]


def _param(url: str, name: str, sysid: int) -> float:
    conn = mavutil.mavlink_connection(url, source_system=245, source_component=191)
    try:
        # a udpout link is silent until we talk: PX4 learns its partner from our first packet
        conn.mav.heartbeat_send(mavutil.mavlink.MAV_TYPE_GCS, mavutil.mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0)
        hb = conn.wait_heartbeat(timeout=10)
        assert hb is not None and hb.autopilot == mavutil.mavlink.MAV_AUTOPILOT_PX4
        assert conn.target_system == sysid
        for _ in range(5):
            conn.mav.param_request_read_send(sysid, 1, name.encode(), -1)
            msg = conn.recv_match(type="PARAM_VALUE", blocking=True, timeout=2)
            if msg is not None and msg.param_id == name:
                return float(msg.param_value)
        raise AssertionError(f"no PARAM_VALUE for {name}")
    finally:
        conn.close()


@pytest.mark.px4
@pytest.mark.slow
@pytest.mark.skipif(PX4_SKIP_REASON is not None, reason=PX4_SKIP_REASON or "")
@pytest.mark.parametrize("px4_sitl", [{"COM_ARM_AUTH_TO": 2.5}], indirect=True)
def test_px4_heartbeats_and_keeps_a_preset(px4_sitl: Px4Sitl) -> None:
    assert px4_sitl.onboard_url == "udpin:127.0.0.1:14540"
    assert px4_sitl.gcs_port == 18570
    assert _param(px4_sitl.onboard_url, "COM_ARM_AUTH_TO", px4_sitl.sysid) == pytest.approx(2.5)
    # the GCS link answers whoever talks to it first
    assert _param(px4_sitl.gcs_url, "COM_ARM_AUTH_TO", px4_sitl.sysid) == pytest.approx(2.5)


@pytest.mark.px4
@pytest.mark.slow
@pytest.mark.skipif(PX4_SKIP_REASON is not None, reason=PX4_SKIP_REASON or "")
def test_stop_kills_our_process_and_removes_the_directory() -> None:
    sitl = Px4Sitl(instance=1, params={"COM_ARM_AUTH_TO": 2.5}, private_etc=True)
    with sitl:
        pid = sitl.proc.pid if sitl.proc else -1
        workdir = sitl.workdir
        airframe = workdir / "etc/init.d-posix/airframes/10040_sihsim_quadx"
        assert (workdir / "etc").is_dir() and not (workdir / "etc").is_symlink()
        airframe.write_bytes(airframe.read_bytes() + b"\n# edited by the test\n")  # this instance's copy only
        assert b"edited by the test" not in (sitl.etc / "init.d-posix/airframes/10040_sihsim_quadx").read_bytes()
        sitl.reboot()  # same directory: the preset is still there, PX4 heartbeats again
        assert sitl.running()
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_missing_build_says_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHTSEAL_PX4_SITL", "/nonexistent/build/px4_sitl_default/bin/px4")
    assert str(px4_from_env()) == "/nonexistent/build/px4_sitl_default"
    with pytest.raises(Px4SitlError, match=r"build-px4-sitl\.sh"):
        Px4Sitl()
