"""Attacks on the gate's verdicts, shared by the virtual FC (CI) and SITL (``sitl``) tests (ADR 0015).

Each scenario takes a prepared :class:`~sim.scenarios.rig.Rig` whose FC runs the gate with the rig's gate
key, and asserts what the pilot and the agent see:
- a forger among the clients of the companion's router (MAVProxy), without the key;
- a pass the gate took, replayed after the FC rebooted;
- a flood of bad-CRC verdict frames from the telemetry radio at a rate no 57600-baud radio reaches.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.gate.client import INT32_MAX, STALE, Sequence, decode_ack, encode_verdict
from attest.models import Verdict
from sim.launchers.mavproxy import MavProxy
from sim.scenarios.rig import Gcs, Rig, gcs
from tests.field import _via, arm_until, free_udp_port, wait_until

PASS = Verdict(True)
AGENT_IDS = {"source_system": 1, "source_component": 191}


@contextlib.contextmanager
def mav(url: str) -> Iterator[Any]:
    from pymavlink import mavutil

    conn = mavutil.mavlink_connection(url, autoreconnect=False, **AGENT_IDS)
    try:
        assert conn.wait_heartbeat(timeout=15) is not None, f"no HEARTBEAT on {url}"
        yield conn
    finally:
        conn.close()


def forger_behind_the_router(rig: Rig, fc_companion_url: str, workdir: Path, *, arm_timeout: float = 90.0) -> None:
    """A client of the companion's router sends passes in the agent's name with the largest
    sequence, without the key: the gate never takes them, the agent goes on delivering (no wedge),
    and every attestation fails with posture-gate-forgery, which the pilot reads."""
    agent_port, forger_port = free_udp_port(), free_udp_port()
    with MavProxy(fc_companion_url, [agent_port, forger_port], workdir / "mavproxy-router"), \
            gcs(rig.gcs_url) as pilot:
        wait_until("the router's stream request to set MAV2_RAW_SENS", lambda: pilot.get_param("MAV2_RAW_SENS"),
                   timeout=40)
        rig.start_agent(_via(rig, f"udpin:127.0.0.1:{agent_port}"))
        daemon = rig.wait_verdict(passed=True, timeout=60)
        arm_until(pilot, accepted=True, timeout=arm_timeout)
        passes = daemon.status.passes
        with mav(f"udpin:127.0.0.1:{forger_port}") as forger:
            for i in range(5):
                forger.mav.send(encode_verdict(PASS, Sequence(INT32_MAX, INT32_MAX - i), bytes(32)))
                time.sleep(0.2)
        rig.wait_verdict(passes=passes + 1, passed=False, code="posture-gate-forgery", timeout=30)
        acks = daemon.status.gate_acks
        wait_until("the agent's verdicts still taken", lambda: daemon.status.gate_acks >= acks + 2, timeout=10)
        assert daemon.status.gate_error == "", daemon.status.gate_error
        arm_until(pilot, accepted=False, text="FlightSeal: posture-gate-forgery", timeout=20)
        audit = Path(rig.config().audit.path).read_text()
        assert "forged gate traffic" in audit


def replay_after_reboot(rig: Rig, reboot: Callable[[Gcs], None]) -> None:
    """A pass the gate took is sent again after the FC rebooted: the gate's sequence started over,
    but the pass was made for the last load's nonce, so it is answered STALE and arming stays refused."""
    assert rig.gate_key is not None
    daemon = rig.start_agent()
    rig.wait_verdict(passed=True, timeout=60)
    assert daemon.gate is not None
    nonce, epoch = daemon.gate.nonce, daemon.sequence.epoch
    rig.stop_agent()
    captured = encode_verdict(PASS, Sequence(epoch + 100, 1), rig.gate_key, nonce)
    with mav(rig.fc_url) as link:
        link.mav.send(captured)
        ack = _ack(link, rig.gate_key, Sequence(epoch + 100, 1))
        assert ack is not None and ack.result == 0, "the pass was good before the reboot"
    with gcs(rig.gcs_url) as pilot:
        reboot(pilot)
    time.sleep(2.0)
    with mav(rig.fc_url) as link:
        deadline = time.monotonic() + 60
        ack = None
        while ack is None and time.monotonic() < deadline:  # scripting starts a few seconds after boot
            link.mav.send(captured)
            ack = _ack(link, rig.gate_key, Sequence(epoch + 100, 1), timeout=1.0)
        assert ack is not None and ack.result == STALE and ack.nonce != nonce, ack
    with gcs(rig.gcs_url) as pilot:
        arm_until(pilot, accepted=False, text="FlightSeal: waiting", timeout=20)


def _ack(link: Any, key: bytes, seq: Sequence, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = link.recv_match(type="TUNNEL", blocking=True, timeout=0.2)
        if msg is None:
            continue
        ack = decode_ack(msg, key)
        if ack is not None and ack.sequence == seq:
            return ack
    return None


def bad_crc_verdict(seq: Sequence) -> bytes:
    """A verdict frame in the agent's name whose CRC is wrong: ArduPilot hands it to scripting anyway."""
    from pymavlink.dialects.v20 import ardupilotmega as mavlink2

    frame = bytearray(encode_verdict(PASS, seq, bytes(32)).pack(mavlink2.MAVLink(None, **{
        "srcSystem": 1, "srcComponent": 191})))
    frame[-1] ^= 0xFF
    return bytes(frame)


def radio_flood(rig: Rig, radio_url: str, *, rate_hz: float = 100.0, arm_timeout: float = 90.0) -> None:
    """The radio floods bad-CRC verdict frames at ``rate_hz`` (a 57600-baud radio carries ~40 of them a
    second) while the pilot arms: the gate drains its queue faster than that, so the agent's pass holds."""
    rig.start_agent()
    daemon = rig.wait_verdict(passed=True, timeout=60)
    stop = threading.Event()
    sent = [0]

    def flood(conn: Any) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens to the test
        while not stop.is_set() and time.monotonic() < deadline:
            conn.write(bad_crc_verdict(Sequence(INT32_MAX, sent[0] + 1)))
            sent[0] += 1
            time.sleep(1.0 / rate_hz)

    with mav(radio_url) as radio, gcs(rig.gcs_url) as pilot:
        thread = threading.Thread(target=flood, args=(radio,), daemon=True)
        thread.start()
        try:
            time.sleep(4.0)  # longer than the gate's lapse: the pass must have been refreshed through the flood
            arm_until(pilot, accepted=True, timeout=arm_timeout)
        finally:
            stop.set()
            thread.join(timeout=5)
    assert sent[0] > 4 * rate_hz * 0.8, sent
    assert daemon.status.gate_error == "", daemon.status.gate_error
