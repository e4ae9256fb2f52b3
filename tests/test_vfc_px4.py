"""The virtual PX4 against the PX4 v1.16.0 SITL recordings in tests/data/px4-sitl/.

Each test drives the virtual PX4 the way ``sim.scenarios.px4_record`` drove SITL (the same
pymavlink taps, responders and arm attempts) and compares what comes back with what SITL sent.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MAVLINK20", "1")

from sim.scenarios import px4_record as rec
from sim.vfc.px4 import DATA_DIR, Px4VfcConfig, VirtualPx4, px4_crc32

mav = rec.mav
ACC, DEN, TMP = mav.MAV_RESULT_ACCEPTED, mav.MAV_RESULT_DENIED, mav.MAV_RESULT_TEMPORARILY_REJECTED


def _load(name: str) -> Any:
    return json.loads((DATA_DIR / name).read_text())


BOOT = _load("boot.json")
PARAMS = _load("params.json")
PARAM_LIST = _load("param-list.json")
FTP = _load("ftp.json")
ARM = _load("arm_auth.json")


@pytest.fixture
def rig() -> Iterator[rec.Rig]:
    """A virtual PX4 with the recorder's arm-authorization presets, and the recorder's two taps on it."""
    with VirtualPx4(Px4VfcConfig(params=rec.AUTH_PARAMS, standby_delay=0.5)) as px4:
        r = rec.Rig(px4).open()
        try:
            assert r.ob.wait("HEARTBEAT", 5.0) is not None
            yield r
        finally:
            r.close()


def _texts(summary: dict[str, Any]) -> set[str]:
    """The distinct STATUSTEXTs of an attempt, without the logger's file names."""
    return {t["text"] for t in summary["texts"] if not t["text"].startswith("[logger]")}


def _answer_to(**target: int) -> rec.Responder:
    """A responder that ACCEPTs the first request 5 ms later, addressed to ``target`` instead of PX4."""
    def answer(r: rec.Rig, tap: rec.Tap, req: Any, nth: int) -> None:
        if nth == 1:
            rec.later(0.005, lambda: r.auth_ack(tap, ACC, 0, 1, **target))
    return answer


def _attempt(r: rec.Rig, name: str, answer: rec.Responder | None, **kw: Any) -> dict[str, Any]:
    """One arm attempt; with ``like=<recorded case>``, as many check rounds as SITL ran in that case."""
    like = kw.pop("like", None)
    r.px4.set_check_rounds(None if like is None else _rounds(like))
    return rec.arm_attempt(r, name, answer, settle=kw.pop("settle", 0.3), **kw)


def _rounds(summary: dict[str, Any]) -> int:
    """How many times SITL ran its checks (one new request, confirmation 0, per run) in a recorded attempt."""
    return max(1, len([r for r in summary["auth_requests"] if r["link"] == "onboard" and r["confirmation"] == 0]))


# ---------------------------------------------------------------- heartbeat, version
def test_heartbeat_matches_the_recording(rig: rec.Rig) -> None:
    first, standby = BOOT["summary"]["heartbeat_changes"][:2]
    hb = rig.ob.last["HEARTBEAT"]
    for field in ("type", "autopilot", "base_mode", "custom_mode", "mavlink_version"):
        assert getattr(hb, field) == first[field], field
    assert first["system_status"] == 0 and standby["system_status"] == 3
    assert rig.ob.wait("HEARTBEAT", 3.0, lambda m: m.get_srcSystem() == 1 and m.system_status == 3) is not None
    # PX4 forwards other peers' heartbeats between its links (recorded: the GCS's on the onboard link)
    assert rig.ob.wait("HEARTBEAT", 3.0, lambda m: m.get_srcSystem() == rec.GCS_SYSID) is not None


def test_autopilot_version_matches_the_recording(rig: rec.Rig) -> None:
    got = rec.request_autopilot_version(rig, rig.ob)
    want = BOOT["summary"]["autopilot_version"]
    assert got is not None
    for field, value in want.items():
        if not field.startswith("_") and field != "mavpackettype":
            assert rec.msg_dict(got)[field] == value, field
    assert BOOT["summary"]["param_encode_bytewise"] and not BOOT["summary"]["param_encode_c_cast"]
    assert bytes(got.flight_custom_version)[::-1].hex().startswith("6ea3539157")  # v1.16.0, byte-reversed


def test_version_comes_before_its_ack_as_recorded(rig: rec.Rig) -> None:
    rx = [e for e in BOOT["events"] if e["dir"] == "rx" and e["link"] == "onboard"]
    t_version = min(e["t_ms"] for e in rx if e["msg"]["mavpackettype"] == "AUTOPILOT_VERSION")
    t_ack = min(e["t_ms"] for e in rx if e["msg"]["mavpackettype"] == "COMMAND_ACK" and e["msg"]["command"] == 512)
    recorded = ["AUTOPILOT_VERSION", "COMMAND_ACK"] if t_version < t_ack else ["COMMAND_ACK", "AUTOPILOT_VERSION"]
    seen: list[str] = []

    def hook(_: rec.Tap, msg: Any) -> None:
        if msg.get_type() in ("AUTOPILOT_VERSION", "COMMAND_ACK"):
            seen.append(msg.get_type())
    rig.ob.hooks.append(hook)
    rig.command(rig.ob, mav.MAV_CMD_REQUEST_MESSAGE, mav.MAVLINK_MSG_ID_AUTOPILOT_VERSION)
    rig.ob.wait("COMMAND_ACK", 2.0)
    assert seen[:2] == recorded == ["AUTOPILOT_VERSION", "COMMAND_ACK"]


# ---------------------------------------------------------------- parameters
def test_param_list_has_px4s_names_types_and_bytewise_ints(rig: rec.Rig) -> None:
    got: dict[int, Any] = {}
    extra: list[Any] = []

    def hook(_: rec.Tap, msg: Any) -> None:
        if msg.get_type() == "PARAM_VALUE":
            (got.__setitem__(msg.param_index, msg) if msg.param_index < 65535 else extra.append(msg))
    rig.ob.hooks.append(hook)
    rig.ob.send("param_request_list", 1, 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(got) < PARAM_LIST["count"] or not extra):
        time.sleep(0.05)
    rig.ob.hooks.remove(hook)
    assert len(got) == PARAM_LIST["count"] == PARAMS["summary"]["param_count"]
    for entry in PARAM_LIST["params"]:
        m = got[entry["index"]]
        assert (m.param_id, m.param_type, m.param_count) == (entry["name"], entry["type"], PARAM_LIST["count"])
        if entry["name"] not in PARAM_LIST["presets"]:
            if entry["type"] == 6:  # compare the bits: an INT32 of -1 travels as a NaN
                assert rec.float_bits_to_int(m.param_value) == entry["value"], entry["name"]
            else:
                assert m.param_value == pytest.approx(entry["wire"], rel=1e-6, abs=1e-45), entry["name"]
    assert {e["type"] for e in PARAM_LIST["params"]} == {6, 9}
    hash_check = PARAMS["summary"]["non_indexed_values"][0]
    assert [(m.param_id, m.param_type, m.param_index) for m in extra] == \
        [(hash_check["param_id"], hash_check["param_type"], hash_check["param_index"])]
    # an INT32 is its four bytes in the float: COM_ARM_AUTH_REQ=1 is the smallest subnormal, as recorded
    auth = next(m for m in got.values() if m.param_id == "COM_ARM_AUTH_REQ")
    assert rec.float_bits_to_int(auth.param_value) == 1


def _read(r: rec.Rig, name: str = "", index: int = -1) -> Any:
    r.ob.send("param_request_read", 1, 1, name.encode(), index)
    return r.ob.wait("PARAM_VALUE", 1.0, lambda m: (m.param_id == name) if name else (m.param_index == index))


def _shape(m: Any) -> tuple[Any, ...]:
    d = m if isinstance(m, dict) else rec.msg_dict(m)
    return d["param_id"], d["param_type"], d["param_count"], d["param_index"], d.get("_int", d["param_value"])


def test_param_read_and_set_answer_as_recorded(rig: rec.Rig) -> None:
    s = PARAMS["summary"]
    assert _shape(_read(rig, "COM_ARM_AUTH_ID")) == _shape(s["read_by_name"])
    assert _shape(_read(rig, index=0)) == _shape(s["read_by_index_0"])
    assert _read(rig, "NO_SUCH_PARAM") is None and s["read_unknown_name"] is None
    echo = rig.param_set(rig.ob, "COM_ARM_AUTH_ID", rec.RESPONDER_SYSID, mav.MAV_PARAM_TYPE_INT32)
    assert _shape(echo) == _shape(s["set_int32_bytewise_echo"])
    echo = rig.param_set(rig.ob, "COM_ARM_AUTH_TO", 1.5, mav.MAV_PARAM_TYPE_REAL32)
    assert _shape(echo) == _shape(s["set_real32_echo"])
    # an INT32 sent the C-cast way (7.0) is stored as the float's bits, as SITL did
    rig.ob.send("param_set", 1, 1, b"SDLOG_DIRS_MAX", 7.0, mav.MAV_PARAM_TYPE_INT32)
    echo = rig.ob.wait("PARAM_VALUE", 1.0, lambda m: m.param_id == "SDLOG_DIRS_MAX")
    assert _shape(echo) == _shape(s["set_int32_as_c_cast_7.0_echo"])
    # the wrong type: no answer, nothing changed
    rig.ob.send("param_set", 1, 1, b"COM_ARM_AUTH_MET", 1.0, mav.MAV_PARAM_TYPE_REAL32)
    assert rig.ob.wait("PARAM_VALUE", 0.5, lambda m: m.param_id == "COM_ARM_AUTH_MET") is None
    assert s["set_int32_param_with_real32_type_echo"] is None
    assert rig.px4.get_param("COM_ARM_AUTH_MET") == 0


def test_a_set_is_announced_on_both_links(rig: rec.Rig) -> None:
    rig.gc.heartbeat()
    time.sleep(0.1)
    rig.px4.set_param("COM_ARM_AUTH_TO", 2.0)
    assert rig.ob.wait("PARAM_VALUE", 1.0, lambda m: m.param_id == "COM_ARM_AUTH_TO") is not None or \
        rig.px4.get_param("COM_ARM_AUTH_TO") == 2.0
    assert rig.px4.get_param("COM_ARM_AUTH_TO") == pytest.approx(2.0)
    with pytest.raises(KeyError):
        rig.px4.set_param("NO_SUCH_PARAM", 1)


# ---------------------------------------------------------------- FTP
def _entries(listing: dict[str, Any]) -> set[str]:
    return {e for e in listing["entries"] if e != "S"}


def test_ftp_tree_matches_the_recording(rig: rec.Rig) -> None:
    ftp = rec.Ftp(rig, rig.ob)
    rec_list = FTP["summary"]["listings"]
    root = ftp.listdir("/")
    names = {e.split("\t")[0] for e in _entries(root)}
    assert names == {e.split("\t")[0] for e in _entries(rec_list["/"])}
    assert root["end"][0]["error"] == rec_list["/"]["end"][0]["error"] == "EOF"
    assert "S" in root["entries"]  # etc is a symlink in PX4's working directory
    assert _entries(ftp.listdir("etc")) >= {"Dinit.d", "Dinit.d-posix"}
    airframes = ftp.listdir("etc/init.d-posix/airframes")
    assert "F10040_sihsim_quadx\t973" in airframes["entries"]
    assert "F10040_sihsim_quadx\t973" in rec_list["etc/init.d-posix/airframes"]["entries"]
    for path in ("/fs/microsd", "@SYS", "@PARAM"):
        got = ftp.listdir(path)
        assert got["end"][0]["error"] == rec_list[path]["end"][0]["error"] == "FileNotFound", path


def test_ftp_files_crc_and_naks_match_the_recording(rig: rec.Rig) -> None:
    ftp = rec.Ftp(rig, rig.ob)
    files = FTP["summary"]["files"]
    airframe = "etc/init.d-posix/airframes/10040_sihsim_quadx"
    got = ftp.read(airframe)
    assert got["data"] == (DATA_DIR / files[airframe]["saved_as"]).read_bytes()
    assert got["open_size"] == files[airframe]["open_size"]
    assert got["end"]["error"] == files[airframe]["end"]["error"] == "EOF"
    for path in ("@SYS/flash.bin", "@PARAM/param.pck", "@ROMFS/locations.txt", "no/such/file"):
        assert ftp.read(path)["open"]["error"] == files[path]["open"]["error"] == "FileNotFound", path
    crc = ftp.crc(airframe)
    assert crc["crc32"] == FTP["summary"]["crc32"][airframe]["crc32"] == FTP["summary"]["airframe_crc32_init0_noxor"]
    assert ftp.crc("@SYS/flash.bin")["error"] == "FileNotFound"
    # one session: a second open is refused, a read after TerminateSession is InvalidSession
    first, second = ftp.op(4, b"etc/init.d-posix/rcS"), ftp.op(4, b"etc/init.d/rc.mc_defaults")
    assert first is not None and second is not None
    assert (first["opcode"], second.get("error")) == (FTP["summary"]["open_twice"]["first"]["opcode"],
                                                      FTP["summary"]["open_twice"]["second"]["error"])
    ftp.op(1, session=0)
    after = ftp.op(5, session=0, size=239)
    assert after is not None and after["error"] == FTP["summary"]["read_after_terminate"]["error"]
    # a peer may write files (recorded: CreateFile ACKed)
    probe = ftp.op(6, b"flightseal_probe.txt")
    assert probe is not None and probe["opcode"] == FTP["summary"]["create_file_probe"]["opcode"] == "ACK"
    ftp.op(1, session=0)


def test_ftp_burst_read_ends_as_recorded(rig: rec.Rig) -> None:
    ftp = rec.Ftp(rig, rig.ob)
    got = rec.ftp_burst(rig, ftp, "etc/init.d-posix/airframes/10040_sihsim_quadx")
    want = FTP["summary"]["burst_read_airframe"]

    def shape(replies: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["opcode"], r["offset"], r["bytes"], r["burst_complete"], r.get("error")) for r in replies]
    assert shape(got["replies"]) == shape(want["replies"])
    assert got["bytes_total"] == want["bytes_total"] == 973


def test_parameters_bson_holds_what_sitl_saved(rig: rec.Rig) -> None:
    rig.param_set(rig.ob, "COM_ARM_AUTH_TO", 1.5, mav.MAV_PARAM_TYPE_REAL32)  # as the recording did
    ftp = rec.Ftp(rig, rig.ob)
    got = rec.bson_decode(ftp.read("parameters.bson")["data"])
    want = FTP["summary"]["files"]["parameters.bson"]["bson"]
    assert set(got["entries"]) == set(want["entries"])
    for name, entry in want["entries"].items():
        assert got["entries"][name]["type"] == entry["type"], name


def test_a_served_file_can_be_tampered_with() -> None:
    with VirtualPx4() as px4:
        px4.write_file("etc/init.d-posix/airframes/10040_sihsim_quadx", b"param set-default MPC_XY_VEL_MAX 50\n")
        assert px4.read_file("etc/init.d-posix/airframes/10040_sihsim_quadx").startswith(b"param set-default")
        assert px4_crc32(b"123456789") == 0x2DFD2D88  # CRC-32 from 0, no final XOR


# ---------------------------------------------------------------- arm authorization
def _recorded(name: str) -> dict[str, Any]:
    summary: dict[str, Any] = ARM["summary"][name]
    return summary


def _same_outcome(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["armed"] == want["armed"]
    assert got["arm_ack"]["result"] == want["arm_ack"]["result"]
    assert got["arm_ack"]["target"] == want["arm_ack"]["target"]
    assert _texts(got) == _texts(want)
    assert got["disarmed_after"]


def test_request_goes_to_the_authorizer_on_both_links(rig: rec.Rig) -> None:
    want = _recorded("b_accepted_after_5ms")
    got = _attempt(rig, "b", rec.ack_after(0.005, ACC, param2=5), like=want)
    _same_outcome(got, want)
    for summary in (got, want):
        first = {r["link"]: r for r in summary["auth_requests"] if r["confirmation"] == 0}
        assert set(first) == {"onboard", "gcs"}
        for r in first.values():
            assert (r["src"], r["target"], r["params"]) == ([1, 1], [rec.RESPONDER_SYSID, 0], [0.0] * 7)
        assert abs(first["onboard"]["t_ms"] - first["gcs"]["t_ms"]) < 20


def test_no_answer_refuses_after_the_timeout_with_retries(rig: rec.Rig) -> None:
    t = time.monotonic()
    want = _recorded("a_no_answer")
    got = _attempt(rig, "a", None, settle=2.3, like=want)
    _same_outcome(got, want)
    assert 0.95 <= (got["arm_ack_t_ms"] or 0) / 1000 <= 2.2 and time.monotonic() - t < 6
    for summary in (got, want):
        confirmations = {(r["link"], r["confirmation"]) for r in summary["auth_requests"]}
        assert confirmations == {(link, c) for link in ("onboard", "gcs") for c in range(4)}
        first_retry = min(r["t_ms"] for r in summary["auth_requests"] if r["confirmation"] == 1)
        assert 900 <= first_retry <= 1200


@pytest.mark.parametrize(("case", "answer"), [
    ("c_denied_generic_progress0", rec.ack_after(0.005, DEN, progress=0)),
    ("c_denied_none_progress1", rec.ack_after(0.005, DEN, progress=1)),
    ("c_denied_waypoint_progress2", rec.ack_after(0.005, DEN, progress=2, param2=7)),
    ("c_denied_timeout_reason", rec.ack_after(0.005, DEN, progress=3)),
    ("d_temporarily_rejected", rec.ack_after(0.005, TMP)),
    ("i_in_progress_then_accepted", rec.both(rec.ack_after(0.005, mav.MAV_RESULT_IN_PROGRESS),
                                             rec.ack_after(0.3, ACC, param2=1))),
    ("k_accepted_target_component_0", _answer_to(target_component=0)),
    ("j_accepted_wrong_target_system", _answer_to(target_system=51)),
])
def test_answers_have_the_recorded_outcome(rig: rec.Rig, case: str, answer: rec.Responder) -> None:
    """DENIED (and its reason texts by ``progress``), TEMPORARILY_REJECTED, IN_PROGRESS then ACCEPTED, and
    ACKs addressed to component 0 (taken) or to another system (dropped) end as on SITL."""
    want = _recorded(case)
    got = _attempt(rig, case, answer, settle=1.2, like=want)
    _same_outcome(got, want)


def test_an_instant_answer_is_ignored_on_the_4ms_clock(rig: rec.Rig) -> None:
    """An ACK stamped in the same 4 ms step as the request does not count (``timestamp > auth_req_time``).

    SITL's phase varies: sub-millisecond answers were refused in most recorded tries; the virtual PX4
    sends its request at the start of a step, so it refuses them every time.
    """
    got = _attempt(rig, "e", rec.ack_after(0.0, ACC, param2=1), settle=1.2)
    refused = [v for k, v in ARM["summary"].items() if k.startswith("e_") and not v["armed"]]
    assert refused, "the recording shows an instant answer being ignored"
    assert not got["armed"] and got["arm_ack"]["result"] == TMP
    assert "Arm auth: No response" in _texts(got) and _texts(got) <= _texts(refused[0])
    time.sleep(2.1)  # past the 2 s report interval: the next attempt may take two rounds again
    later = _attempt(rig, "e_4ms", rec.ack_after(0.006, ACC, param2=1))
    assert later["armed"] and _recorded("e3_accepted_after_4ms")["armed"]


@pytest.mark.parametrize("case", ["f_forged_accept_gcs_then_real_deny", "f_forged_accept_gcs_alone",
                                  "f_real_deny_then_forged_accept_gcs", "f_forged_accept_onboard_sysid77"])
def test_a_forged_ack_from_another_system_counts_as_on_sitl(rig: rec.Rig, case: str) -> None:
    """PX4 does not check who sent the ACK: a forged ACCEPTED from sysid 77 arms, if it comes first."""
    forged = rec.ack_after(0.005, ACC, param2=1, sysid=rec.ATTACKER_SYSID,
                           via="onboard" if case.endswith("onboard_sysid77") else "gcs")
    answer = {
        "f_forged_accept_gcs_then_real_deny": rec.both(forged, rec.ack_after(0.020, DEN)),
        "f_forged_accept_gcs_alone": forged,
        "f_real_deny_then_forged_accept_gcs": rec.both(
            rec.ack_after(0.005, DEN), rec.ack_after(0.020, ACC, param2=1, sysid=rec.ATTACKER_SYSID, via="gcs")),
        "f_forged_accept_onboard_sysid77": forged,
    }[case]
    want = _recorded(case)
    got = _attempt(rig, case, answer, like=want)
    _same_outcome(got, want)


def test_an_ack_before_the_request_is_ignored(rig: rec.Rig) -> None:
    def ack_first() -> None:
        rig.auth_ack(rig.ob, ACC, 0, 60)
        time.sleep(0.2)
    want = _recorded("g_ack_before_request")
    got = _attempt(rig, "g", None, pre=ack_first, settle=2.3, like=want)
    assert not got["armed"] and not want["armed"]
    assert got["arm_ack"]["result"] == want["arm_ack"]["result"] == TMP
    assert _texts(got) == _texts(want)


def test_validity_window_as_recorded(rig: rec.Rig) -> None:
    """Accepted for N s: a re-arm inside the window asks nobody; after it, PX4 asks again."""
    want = ARM["summary"]["h_validity"]
    first = _attempt(rig, "h1", rec.ack_after(0.005, ACC, param2=2))
    within = _attempt(rig, "h2", None)
    assert first["armed"] and want["first"]["armed"]
    assert within["armed"] == want["rearm_within"]["armed"] is True
    assert within["auth_requests"] == want["rearm_within"]["auth_requests"] == []
    time.sleep(2.2)
    after = _attempt(rig, "h3", None, settle=1.2)
    assert after["armed"] == want["rearm_after"]["armed"] is False
    assert after["auth_requests"] and want["rearm_after"]["auth_requests"]
    assert "Arm auth: No response" in _texts(after) & _texts(want["rearm_after"])


def test_without_arm_auth_required_arming_asks_nobody() -> None:
    with VirtualPx4() as px4:
        r = rec.Rig(px4).open()
        try:
            assert r.ob.wait("HEARTBEAT", 5.0) is not None
            got = _attempt(r, "plain", None)
            assert got["armed"] and got["auth_requests"] == []
            assert not px4.armed()  # disarmed again by the attempt
        finally:
            r.close()


def test_recordings_are_present() -> None:
    readme = (DATA_DIR / "README.md").read_text()
    assert "v1.16.0" in readme
    assert Path(DATA_DIR / "ftp-files" / "etc_init.d-posix_airframes_10040_sihsim_quadx").is_file()
    assert struct.calcsize("<HBBBBBxI") == 12


def test_reboot_keeps_parameters_and_files_and_comes_back_unarmed(rig: rec.Rig) -> None:
    """As a PX4 SITL restarted in its directory: silent for the gap, then UNINIT again, saved state kept."""
    rig.px4.set_param("COM_ARM_AUTH_TO", 1.5)
    rig.px4.write_file("etc/init.d-posix/airframes/10040_sihsim_quadx", b"# changed\n")
    rig.px4.reboot(gap=0.6)
    time.sleep(0.1)
    before = rig.ob.mark()
    assert rig.ob.wait("HEARTBEAT", 0.4, lambda m: m.get_srcSystem() == 1, after=before) is None
    hb = rig.ob.wait("HEARTBEAT", 3.0, lambda m: m.get_srcSystem() == 1, after=before)
    assert hb is not None and hb.system_status == 0 and not hb.base_mode & mav.MAV_MODE_FLAG_SAFETY_ARMED
    assert rig.px4.get_param("COM_ARM_AUTH_TO") == pytest.approx(1.5) and not rig.px4.armed()
    assert rig.px4.read_file("etc/init.d-posix/airframes/10040_sihsim_quadx") == b"# changed\n"
    rig.ob.heartbeat()  # a new PX4 process learns its partner again from the first packet
    assert rig.ob.wait("HEARTBEAT", 2.0, lambda m: m.get_srcSystem() == 1) is not None


def test_forwarding_between_links_matches_the_recording() -> None:
    """PX4 forwards what is not for itself (system and component) to the link where the target was
    heard, lossily (tests/data/px4-sitl/forwarding.json); what is for PX4 itself stays."""
    import json as _json

    from pymavlink import mavutil as _mavutil

    from sim.scenarios.px4_record_forwarding import _drain, _tunnels

    recorded = _json.loads((DATA_DIR / "forwarding.json").read_text())["cases"]
    with VirtualPx4() as fc:
        companion = _mavutil.mavlink_connection(fc.url, source_system=fc.sysid, source_component=191)
        companion.wait_heartbeat(timeout=10)
        gcs = _mavutil.mavlink_connection(fc.gcs_url, source_system=255, source_component=190)
        for _ in range(3):
            companion.mav.heartbeat_send(18, 8, 0, 0, 4)
            gcs.mav.heartbeat_send(6, 8, 0, 0, 4)
            time.sleep(0.2)
        gcs.wait_heartbeat(timeout=10)
        to_companion = _tunnels(gcs, companion, (fc.sysid, 191), 20, 0.05)
        to_gcs = _tunnels(companion, gcs, (255, 190), 20, 0.05)
        to_px4 = _tunnels(gcs, companion, (fc.sysid, 1), 10, 0.05)
        _drain(gcs, "STATUSTEXT", 0.3)
        companion.mav.statustext_send(4, b"FlightSeal: forwarding probe")
        texts = [str(m.text) for m in _drain(gcs, "STATUSTEXT", 1.0)]
        companion.close()
        gcs.close()
    for got, case in ((to_companion, "gcs_to_companion_one_by_one"), (to_gcs, "companion_to_gcs_one_by_one")):
        assert 0 < recorded[case]["received"] < recorded[case]["sent"], "the recording shows a lossy forward"
        assert 0 < got["received"] < got["sent"], (case, got)
    assert to_px4["received"] == recorded["to_px4_itself_not_forwarded"]["received"] == 0
    assert ("FlightSeal: forwarding probe" in texts) is recorded["companion_statustext_reaches_gcs"] is True
