"""Field scenarios shared by the virtual FC (CI) and SITL (``sitl``) tests: real MAVProxy on the links.

A ground station is on the FC's GCS port through a whole operator session, or a router owns the
companion port and shares it with the agent. Each scenario takes a prepared :class:`~sim.scenarios.rig.Rig`
whose FC is running, and asserts what a pilot sees.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from sim.launchers.mavproxy import MavProxy
from sim.scenarios.rig import Gcs, Rig, gcs

GUIDED = 4
STABILIZE = 0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check, timeout: float, period: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def arm_until(gcs: Gcs, *, accepted: bool, text: str = "", timeout: float = 90.0) -> str:
    """Arm until the FC answers as expected (SITL needs its EKF first); disarm after an accepted arm."""
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = gcs.arm()
        last = str(result)
        if result.accepted:
            assert gcs.disarm().accepted
            if accepted:
                return last
        elif not accepted and text in result.text:
            return result.text
        time.sleep(1.0)
    raise AssertionError(f"expected arming {'accepted' if accepted else 'refused with ' + text}, last: {last}")


def operator_session_with_mavproxy(rig: Rig, workdir: Path, *, arm_timeout: float = 90.0) -> None:
    """MAVProxy as the GCS on SERIAL0: connect (stream requests), parameter download, mode change, arm,
    disarm; the agent starts after the GCS changed the stream rates. Then a pinned and an unpinned
    parameter changed from the GCS are refused, each by name."""
    pilot_port = free_udp_port()
    with MavProxy(rig.gcs_url, [pilot_port], workdir / "mavproxy-gcs") as gcs_proxy:
        assert gcs_proxy.wait_output("Received ", 60), gcs_proxy.output()[-2000:]
        pilot = Gcs(f"udpin:127.0.0.1:{pilot_port}")
        try:
            wait_until("MAVProxy's stream request to set MAV1_RAW_SENS", lambda: pilot.get_param("MAV1_RAW_SENS"),
                       timeout=40)
            rig.start_agent()
            rig.wait_verdict(passed=True, timeout=60)
            wait_until("GUIDED accepted (SITL needs a position first)", lambda: pilot.set_mode(GUIDED) == 0,
                       timeout=arm_timeout, period=1.0)
            arm_until(pilot, accepted=True, timeout=arm_timeout)
            assert pilot.set_mode(STABILIZE) == 0

            passes = rig.daemon.status.passes if rig.daemon else 0
            pilot.set_param("FS_THR_ENABLE", 0)
            rig.wait_verdict(passes=passes + 1, passed=False, code="param-pinned", timeout=30)
            arm_until(pilot, accepted=False, text="FlightSeal: pinned FS_THR_ENABLE", timeout=15)

            pilot.set_param("FS_THR_ENABLE", 1)
            pilot.set_param("RTL_ALT", 2500)
            rig.wait_verdict(passed=False, code="param-mismatch", timeout=30)
            arm_until(pilot, accepted=False, text="FlightSeal: param RTL_ALT", timeout=15)
            assert gcs_proxy.running(), gcs_proxy.output()[-2000:]
        finally:
            pilot.close()


def agent_behind_a_mavproxy_router(rig: Rig, fc_companion_url: str, workdir: Path, *,
                                   arm_timeout: float = 90.0) -> None:
    """MAVProxy owns the FC's companion port and shares it (UDP outs) with the agent and a radio bridge;
    the agent's verdicts reach the gate through it: a good manifest arms, a pinned change is refused."""
    agent_port, bridge_port = free_udp_port(), free_udp_port()
    with MavProxy(fc_companion_url, [agent_port, bridge_port], workdir / "mavproxy-router"), \
            gcs(rig.gcs_url) as pilot:
        wait_until("the router's stream request to set MAV2_RAW_SENS", lambda: pilot.get_param("MAV2_RAW_SENS"),
                   timeout=40)
        rig.start_agent(_via(rig, f"udpin:127.0.0.1:{agent_port}"))
        rig.wait_verdict(passed=True, timeout=60)
        arm_until(pilot, accepted=True, timeout=arm_timeout)
        passes = rig.daemon.status.passes if rig.daemon else 0
        pilot.set_param("FS_THR_ENABLE", 0)
        rig.wait_verdict(passes=passes + 1, passed=False, code="param-pinned", timeout=30)
        arm_until(pilot, accepted=False, text="FlightSeal: pinned FS_THR_ENABLE", timeout=15)


def _via(rig: Rig, url: str):  # type: ignore[no-untyped-def]
    import dataclasses

    cfg = rig.config()
    return dataclasses.replace(cfg, mavlink=dataclasses.replace(cfg.mavlink, url=url))
