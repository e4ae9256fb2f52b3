"""The virtual FC against what SITL was recorded doing when a client requests data streams
(tests/data/sitl-operator-session): which parameters change, on which channel, that no change
notification goes out, and that a reboot brings the stored values back."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymavlink import mavutil

from attest.params import STREAM_RATES as STREAM_RATE_NAMES
from sim.vfc import VfcConfig, VirtualFC

os.environ.setdefault("MAVLINK20", "1")
DATA = Path(__file__).parent / "data" / "sitl-operator-session"
RECORDED = json.loads((DATA / "changes.json").read_text())


def tlog_frames(path: Path) -> list[bytes]:
    """The raw frames of a capture (8-byte big-endian time, then one MAVLink2 frame)."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        pos += 8
        length, incompat = data[pos + 1], data[pos + 2]
        end = pos + 12 + length + (13 if incompat & 1 else 0)
        out.append(data[pos:end])
        pos = end
    return out


def param_values(path: Path) -> list[tuple[str, float, int, int]]:
    """The stream-rate PARAM_VALUEs in a capture (boot and statistics notifications are time-driven)."""
    conn = mavutil.mavlink_connection(str(path))
    out = []
    while (m := conn.recv_msg()) is not None:
        if m.get_type() == "PARAM_VALUE" and m.param_id.startswith("MAV"):
            out.append((m.param_id, m.param_value, m.param_type, m.param_index))
    return out


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    with VirtualFC(VfcConfig(standby_delay=0.1)) as vfc:
        yield vfc


def replay_client(fc: VirtualFC, channel: int) -> list[tuple[str, float, int, int]]:
    """Send the recorded client's frames to ``channel`` in order; the PARAM_VALUEs the vFC answers."""
    conn = mavutil.mavlink_connection(fc.url(channel), source_system=1, source_component=191)
    got: list[tuple[str, float, int, int]] = []
    try:
        conn.wait_heartbeat(timeout=10)
        for frame in tlog_frames(DATA / "request-data-stream.client.tlog"):
            conn.write(frame)
            time.sleep(0.02)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            m: Any = conn.recv_match(type="PARAM_VALUE", blocking=True, timeout=0.2)
            if m is not None and m.param_id.startswith("MAV"):
                got.append((m.param_id, m.param_value, m.param_type, m.param_index))
    finally:
        conn.close()
    return got


def test_recorded_client_gets_the_same_parameter_answers_from_the_vfc_as_from_sitl(fc: VirtualFC) -> None:
    """Reads before (0), the request (no notification), reads after (4, _PARAMS still 0): as recorded."""
    recorded = param_values(DATA / "request-data-stream.fc.tlog")
    assert len(recorded) == 20
    got = replay_client(fc, channel=1)
    assert [(n, v, t, i) for n, v, t, i in got] == [(n, v, t, i) for n, v, t, i in recorded]


def test_stream_rates_change_for_the_requesting_channel_only_as_recorded(fc: VirtualFC) -> None:
    replay_client(fc, channel=1)
    changed = RECORDED["request_data_stream"]["changed_stream_params"]
    for rate in STREAM_RATE_NAMES:
        assert fc.get_param(f"MAV2_{rate}") == changed.get(f"MAV2_{rate}", [0, 0])[1], rate
        assert fc.get_param(f"MAV1_{rate}") == 0 and fc.get_param(f"MAV3_{rate}") == 0, rate


@pytest.mark.parametrize(("session", "channel"), [("gcs-serial0-full", 0), ("gcs-serial1-connect", 1),
                                                ("gcs-serial2-connect", 2)])
def test_each_gcs_port_changes_its_own_mav_n_parameters_as_recorded(session: str, channel: int) -> None:
    step = next(st for s in RECORDED["sessions"] if s["name"] == session for st in s["steps"]
                if st["step"] == "connect")
    recorded = {n: v[1] for n, v in step["changed"].items() if n.startswith("MAV")}
    with VirtualFC(VfcConfig(standby_delay=0.1, channels=3)) as vfc:
        conn = mavutil.mavlink_connection(vfc.url(channel), source_system=255, source_component=190)
        try:
            conn.wait_heartbeat(timeout=10)
            conn.mav.request_data_stream_send(1, 1, 0, 4, 1)  # what MAVProxy sends on connect (recorded)
            assert vfc.wait_for(lambda: vfc.params.get(f"MAV{channel + 1}_RAW_SENS").value == 4, 3.0)  # type: ignore[union-attr]
        finally:
            conn.close()
        now = {f"MAV{ch}_{rate}": vfc.get_param(f"MAV{ch}_{rate}") for ch in (1, 2, 3) for rate in STREAM_RATE_NAMES}
    assert {n: v for n, v in now.items() if v != 0} == recorded


def test_a_reboot_brings_back_the_stored_stream_rates_as_recorded(fc: VirtualFC) -> None:
    assert RECORDED["summary"][next(k for k in RECORDED["summary"] if k.startswith("MAVn_RAW_SENS"))][
        "persisted"] is False
    replay_client(fc, channel=1)
    assert fc.get_param("MAV2_RAW_SENS") == 4
    fc.reboot()
    assert fc.wait_for(lambda: fc.params.get("MAV2_RAW_SENS").value == 0, 10.0)  # type: ignore[union-attr]


def test_nostreamoverride_ignores_the_request(fc: VirtualFC) -> None:
    fc.set_param("MAV2_OPTIONS", 4)
    replay_client(fc, channel=1)
    assert fc.get_param("MAV2_RAW_SENS") == 0
