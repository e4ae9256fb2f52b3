"""PX4's collectors (``agent/measure/px4.py``): against what a real PX4 v1.16.0 SITL sent
(``tests/data/px4-measure/``, README there says how it was recorded) and, marked ``px4``, against a
live PX4 SITL (``FLIGHTSEAL_PX4_SITL``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MAVLINK20", "1")

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from agent.mavlink.ftp import FtpClient, FtpEntry, FtpError, FtpNotFound, FtpTooLarge
from agent.mavlink.ftpwire import FtpErr
from agent.mavlink.ids import MAV_CMD_COMPONENT_ARM_DISARM, MAV_PARAM_TYPE_INT32, MAV_RESULT_ACCEPTED
from agent.mavlink.link import Link, LinkConfig, heartbeat_armed
from agent.measure import collect, firmware, params, px4
from agent.measure.base import Inventory, MeasureOptions, Pass
from attest import params as paramdigest
from attest.appraise import appraise
from attest.manifest import Airframe, Manifest, Script
from attest.models import Code, Kind, Measurement, Strength
from tests.px4_fixtures import PX4

DATA = Path(__file__).parent / "data" / "px4-measure"
AIRFRAME = "etc/init.d-posix/airframes/10040_sihsim_quadx"
QUICK = MeasureOptions(listen_time=0.3, use_sitl_env=False, param_exclusions=px4.VOLATILE_PARAMS)


# ---- the recording
def _frames(data: bytes) -> list[Any]:
    parser = mavlink.MAVLink(None)
    parser.robust_parsing = True
    return [m for m in parser.parse_buffer(data) or [] if m.get_type() != "BAD_DATA"]


def _recorded(name: str) -> Any:
    (msg,) = _frames(bytes.fromhex(json.loads((DATA / "autopilot-version.json").read_text())[name]))
    return msg


PARAM_FRAMES = _frames((DATA / "param-list.bin").read_bytes())
GIT_REV = json.loads((DATA / "autopilot-version.json").read_text())["git_rev"]


def _param_show() -> dict[str, str]:
    """PX4's own ``param show``: name → the value as PX4 printed it."""
    out = {}
    for line in (DATA / "param-show.txt").read_text().splitlines():
        found = re.match(r"^x\s*[+*]?\s+(\S+) \[\d+,\d+\] : (\S+)$", line)
        if found:
            out[found[1]] = found[2]
    return out


def _same_as_shown(value: float, shown: str) -> bool:
    if "." not in shown:
        return isinstance(value, int) and value == int(shown)
    return isinstance(value, float) and abs(value - float(shown)) <= 0.00005 + 1e-6 * abs(value)


def _bson(data: bytes) -> dict[str, float]:
    """PX4's parameter file: one BSON document of int32 (0x10) and double (0x01) entries."""
    assert struct.unpack_from("<i", data)[0] == len(data)
    out: dict[str, float] = {}
    i = 4
    while data[i] != 0:
        kind = data[i]
        end = data.index(b"\0", i + 1)
        name = data[i + 1:end].decode()
        i = end + 1
        if kind == 0x10:
            out[name] = struct.unpack_from("<i", data, i)[0]
            i += 4
        else:
            assert kind == 0x01, kind
            out[name] = struct.unpack_from("<d", data, i)[0]
            i += 8
    return out


class ReplayLink:
    """What ``params.from_param_protocol`` needs of a link, answering from the recorded frames:
    the whole list after PARAM_REQUEST_LIST (``drop``: indices lost on the way), one frame per
    PARAM_REQUEST_READ."""

    def __init__(self, frames: list[Any], drop: Iterable[int] = ()) -> None:
        self.fc = (3, 1)
        self.mav = mavlink.MAVLink(None, 1, 191)
        self.frames = frames
        self.drop = set(drop)
        self.queue: deque[Any] = deque()
        self.reads: list[int] = []

    def send(self, msg: Any) -> None:
        if msg.get_type() == "PARAM_REQUEST_LIST":
            self.queue.extend(m for m in self.frames if m.param_index not in self.drop)
        elif msg.get_type() == "PARAM_REQUEST_READ":
            self.reads.append(msg.param_index)
            self.queue.extend(m for m in self.frames if m.param_index == msg.param_index)

    def recv(self, types: Iterable[str] | None = None, timeout: float = 1.0,
             match: Callable[[Any], bool] | None = None) -> Any:
        if self.queue:
            return self.queue.popleft()
        time.sleep(min(timeout, 0.01))
        return None


class FakeFtp:
    """A file tree as PX4's FTP shows it: ``files`` path → bytes (or an FtpError to raise), directories
    implied by the paths, plus ``extra`` listing entries."""

    def __init__(self, files: dict[str, bytes | FtpError], extra: dict[str, list[FtpEntry]] | None = None) -> None:
        self.files = files
        self.extra = extra or {}
        self.reads: list[str] = []

    def list_dir(self, path: str) -> list[FtpEntry]:
        prefix = path.rstrip("/") + "/"
        entries = {}
        for name in self.files:
            if name.startswith(prefix):
                head, sep, _ = name[len(prefix):].partition("/")
                entries[head] = FtpEntry(head, bool(sep))
        entries.update({e.name: e for e in self.extra.get(path, [])})
        if not entries:
            raise FtpNotFound("list", path, FtpErr.FILE_NOT_FOUND)
        return list(entries.values())

    def read_file(self, path: str, max_bytes: int) -> bytes:
        self.reads.append(path)
        data = self.files.get(path)
        if data is None:
            raise FtpNotFound("read", path, FtpErr.FILE_NOT_FOUND)
        if isinstance(data, FtpError):
            raise data
        if len(data) > max_bytes:
            raise FtpTooLarge("read", path, FtpErr.INVALID_DATA_SIZE, f"larger than {max_bytes} bytes")
        return data


def _files(ftp: FakeFtp, sitl: bool, autostart: float | None = 10040,
           opts: MeasureOptions = QUICK) -> tuple[list[Measurement], Inventory]:
    inv = Inventory(fc_params=None if autostart is None else {"SYS_AUTOSTART": autostart})
    return px4.collect_files(ftp, sitl, opts, inv), inv  # type: ignore[arg-type]


# ---- identity
def test_identity_decodes_pxs_reversed_git_hash_and_version() -> None:
    claims = px4.identity_claims(_recorded("autopilot_version"))
    assert claims["git_hash"] == GIT_REV[:10] == "6ea3539157"
    assert claims["middleware_git_hash"] == GIT_REV[:10]
    assert claims["version"] == "1.16.0" and claims["version_type"] == "official"
    assert claims["flight_sw_version"] == "0x011000ff"
    assert claims["board_id"] == 1 and claims["vendor_id"] == 0 and claims["product_id"] == 0
    assert claims["uid"] == "4954414c44494e51" and claims["uid2"] == "02" + "00" * 17
    assert "os_git_hash" not in claims and "vendor_version" not in claims  # zero on SITL
    # ArduPilot's reading (ASCII) finds no hash at all: the field starts with the zero vendor version
    assert firmware.identity_claims(_recorded("autopilot_version"))["git_hash"] == ""


def test_identity_names_a_vendor_version_and_nuttxs_hash_when_a_board_sends_them() -> None:
    av = _recorded("autopilot_version")
    av.flight_custom_version = [3, 2, 1, *list(av.flight_custom_version)[3:]]  # patch 3, minor 2, major 1
    av.os_custom_version = list(bytes.fromhex("d7f5fd3b8e2a4c11")[::-1])
    claims = px4.identity_claims(av)
    assert claims["git_hash"] == "6ea3539157" and claims["vendor_version"] == "1.2.3"
    assert claims["os_git_hash"] == "d7f5fd3b8e2a4c11"


def test_sitl_is_told_from_the_board_version() -> None:
    m = Measurement("fc.firmware", Kind.FIRMWARE, {}, "x", Strength.SELF_REPORTED,
                    px4.identity_claims(_recorded("autopilot_version")))
    ident = firmware.FirmwareIdentity(m, 1, "")
    assert px4.is_sitl(ident)
    board = replace(m, claims={**m.claims, "board_version": 50, "board_id": 50, "product_id": 50})
    assert not px4.is_sitl(firmware.FirmwareIdentity(board, 50, ""))


# ---- parameters
def test_bytewise_decoding_gives_pxs_own_values() -> None:
    shown = _param_show()
    values = {m.param_id: params.bytewise_value(m) for m in PARAM_FRAMES if m.param_index != 0xFFFF}
    assert len(values) == len(shown) == 901
    wrong = {n: (values.get(n), v) for n, v in shown.items() if not _same_as_shown(values[n], v)}
    assert wrong == {}
    assert values["SYS_AUTOSTART"] == 10040 and values["MAV_SYS_ID"] == 3 and values["CAL_ACC0_PRIO"] == -1
    assert values["LND_FLIGHT_T_LO"] == 26648000  # above 2^24: not even a float32 could hold it


def test_arduplots_c_cast_reading_would_misread_every_integer() -> None:
    by_name = {m.param_id: m for m in PARAM_FRAMES}
    frame = by_name["SYS_AUTOSTART"]
    assert frame.param_type == MAV_PARAM_TYPE_INT32
    assert params.c_cast_value(frame) != 10040 and 0 < params.c_cast_value(frame) < 1e-40  # a denormal
    assert params.bytewise_value(by_name["MPC_XY_VEL_MAX"]) == params.c_cast_value(by_name["MPC_XY_VEL_MAX"])


def test_an_int32_that_reads_as_a_signalling_nan_keeps_every_bit() -> None:
    """0x7F800001 is a float32 signalling NaN: through a Python float it comes back as 0x7FC00001."""
    raw = struct.pack("<i", 0x7F800001)
    as_float = struct.unpack("<f", raw)[0]
    assert struct.pack("<f", as_float) != raw  # the trap the decoder avoids
    (frame,) = _frames(bytes(next(m for m in PARAM_FRAMES if m.param_id == "SYS_AUTOSTART").get_msgbuf()))
    buf = bytearray(frame.get_msgbuf())
    buf[10:14] = raw
    frame._msgbuf = buf
    assert params.bytewise_value(frame) == 0x7F800001


def test_the_param_protocol_reader_takes_pxs_list_and_asks_for_what_was_lost() -> None:
    link = ReplayLink(PARAM_FRAMES, drop={5, 700})
    values = params.from_param_protocol(link, QUICK, params.bytewise_value)  # type: ignore[arg-type]
    assert len(values) == 901 and "_HASH_CHECK" not in values  # index 65535: not a parameter
    assert sorted(link.reads) == [5, 700]
    shown = _param_show()
    assert all(_same_as_shown(values[n], v) for n, v in shown.items())


def test_a_px4_params_measurement_has_ardupilots_claims_and_names_what_differs() -> None:
    link = ReplayLink(PARAM_FRAMES)
    p = Pass(link, QUICK, Inventory())  # type: ignore[arg-type]
    m = px4.collect_params(p)
    assert m is not None and m.component == "fc.params" and m.kind is Kind.PARAMS
    assert m.source == "mavlink:PARAM_VALUE" and m.claims["method"] == "param-protocol"
    assert m.claims["count"] == 901 and m.claims["exclude"] == ",".join(px4.VOLATILE_PARAMS)
    values = p.inv.fc_params
    assert values is not None and m.digests["sha256"] == paramdigest.digest(values, px4.VOLATILE_PARAMS)
    approved = {**values, "SYS_AUTOSTART": 4001, "COM_FLIGHT_UUID": 0}  # COM_FLIGHT_UUID: volatile
    opts = replace(QUICK, param_baseline=approved, pinned_params=("MAV_SYS_ID",))
    named = px4.collect_params(Pass(ReplayLink(PARAM_FRAMES), opts, Inventory()))  # type: ignore[arg-type]
    assert named is not None and named.claims["differ"] == 1
    assert named.claims["param.SYS_AUTOSTART"] == 10040 and named.claims["param.MAV_SYS_ID"] == 3
    assert "param.COM_FLIGHT_UUID" not in named.claims


def test_the_decoder_follows_the_capabilities_px4_announces() -> None:
    av = _recorded("autopilot_version")
    m = Measurement("fc.firmware", Kind.FIRMWARE, {}, "x", Strength.SELF_REPORTED, px4.identity_claims(av))
    assert px4.value_decoder(firmware.FirmwareIdentity(m, 1, "")) is params.bytewise_value
    c_cast = replace(m, claims={**m.claims, "capabilities": "0x20"})
    assert px4.value_decoder(firmware.FirmwareIdentity(c_cast, 1, "")) is params.c_cast_value
    assert px4.value_decoder(None) is params.bytewise_value


def test_parameters_bson_holds_only_the_parameters_set_away_from_their_defaults() -> None:
    """Why the digest comes from the PARAM protocol: PX4's file lacks every default."""
    stored = _bson((DATA / "parameters.bson").read_bytes())
    shown = _param_show()
    saved = {line.split()[2] for line in (DATA / "param-show.txt").read_text().splitlines()
             if line.startswith("x + ")}
    assert set(stored) == saved and len(stored) == 19 and len(shown) == 901
    assert all(_same_as_shown(float(v) if isinstance(v, float) else v, shown[n]) for n, v in stored.items())


def test_asking_for_the_parameter_file_is_refused_by_name() -> None:
    p = Pass(ReplayLink(PARAM_FRAMES), replace(QUICK, param_source="ftp"), Inventory())  # type: ignore[arg-type]
    assert px4.collect_params(p) is None
    assert "parameters.bson" in p.inv.problems[0].detail


def test_volatile_params_are_exactly_what_px4_changed_by_itself() -> None:
    recording = json.loads((DATA / "volatile.json").read_text())
    base: dict[str, float] = recording["values"]
    changed_names: set[str] = set()
    for phase in recording["phases"]:
        values = {**{n: v for n, v in base.items() if n not in phase["absent"]}, **phase["changed"]}
        left = paramdigest.differences(base, values, px4.VOLATILE_PARAMS)
        # the one outside change: the operator moved the simulator (rcS sets SIH_LOC_* from PX4_HOME_*)
        assert set(left) <= {"SIH_LOC_LAT0", "SIH_LOC_LON0"}, phase["name"]
        changed_names |= set(phase["changed"]) | set(phase["absent"])
    changed_names -= {"SIH_LOC_LAT0", "SIH_LOC_LON0"}
    covered = {p for p in px4.VOLATILE_PARAMS if any(paramdigest.is_excluded(n, [p]) for n in changed_names)}
    assert set(px4.VOLATILE_PARAMS) - covered == {"LND_FLIGHT_T_HI"}  # the counter's high word, by reading
    assert changed_names == {"CAL_BARO1_ID", "CAL_BARO2_ID", "CAL_BARO3_ID", "COM_FLIGHT_UUID", "EKF2_MAG_DECL",
                             "LND_FLIGHT_T_LO"}
    assert not paramdigest.is_excluded("CAL_BARO0_ID", px4.VOLATILE_PARAMS)


# ---- startup files
def test_the_sitl_airframe_file_is_measured_as_a_script() -> None:
    data = (DATA / "10040_sihsim_quadx").read_bytes()
    ftp = FakeFtp({AIRFRAME: data, "etc/init.d-posix/airframes/10041_sihsim_airplane": b"#!/bin/sh\n"})
    out, inv = _files(ftp, sitl=True)
    assert [m.component for m in out] == [f"fc.file:{AIRFRAME}"] and inv.problems == []
    (m,) = out
    assert m.kind is Kind.SCRIPT and m.digests["sha256"] == hashlib.sha256(data).hexdigest()
    assert m.claims == {"path": AIRFRAME, "dir": "etc/init.d-posix/airframes", "size": 973, "role": "airframe"}
    assert "etc/config.txt" in ftp.reads and "etc/extras.txt" in ftp.reads  # absent on SITL: no measurement


def test_a_post_file_and_a_config_txt_are_measured_too() -> None:
    ftp = FakeFtp({AIRFRAME: b"a", f"{AIRFRAME}.post": b"b", "etc/config.txt": b"c"})
    out, _ = _files(ftp, sitl=True)
    assert {str(m.claims["path"]): m.claims["role"] for m in out} == {
        AIRFRAME: "airframe", f"{AIRFRAME}.post": "airframe-hook", "etc/config.txt": "config.txt"}


def test_a_boards_startup_files_and_external_airframes_are_measured_and_dot_dot_never_followed() -> None:
    files: dict[str, bytes | FtpError] = {
        "/etc/init.d/airframes/4001_quad_x": b"quad",
        "/etc/init.d/airframes/4002_quad_x_mount": b"other",
        "/fs/microsd/etc/extras.txt": b"extras",
        "/fs/microsd/ext_autostart/rc.autostart": b"ext",
        "/fs/microsd/ext_autostart/airframes/9001_mine": b"mine",
    }
    hostile = {"/fs/microsd/ext_autostart": [FtpEntry("..", True), FtpEntry("../../x", False, 1)]}
    ftp = FakeFtp(files, hostile)
    out, inv = _files(ftp, sitl=False, autostart=4001)
    assert sorted(str(m.claims["path"]) for m in out) == [
        "/etc/init.d/airframes/4001_quad_x", "/fs/microsd/etc/extras.txt",
        "/fs/microsd/ext_autostart/airframes/9001_mine", "/fs/microsd/ext_autostart/rc.autostart"]
    assert not any(".." in path for path in ftp.reads) and inv.problems == []
    assert "/fs/microsd/etc/rc.txt" in ftp.reads and "/fs/microsd/etc/config.txt" in ftp.reads


def test_files_that_cannot_be_read_fail_closed_and_are_named() -> None:
    broken = FtpError("read", AIRFRAME, None, "3 tries of 1.0 s")
    out, inv = _files(FakeFtp({AIRFRAME: broken}), sitl=True)
    assert [(m.component, dict(m.digests)) for m in out] == [(f"fc.file:{AIRFRAME}", {})]
    assert inv.problems[0].code is Code.MEASUREMENT_MISSING and inv.problems[0].component == f"fc.file:{AIRFRAME}"
    big, inv = _files(FakeFtp({AIRFRAME: b"x" * 10}), sitl=True, opts=replace(QUICK, max_script_bytes=4))
    assert [(m.component, dict(m.digests)) for m in big] == [(f"fc.file:{AIRFRAME}", {})]
    assert "larger than 4 bytes" in str(big[0].claims["error"])
    unknown, inv = _files(FakeFtp({AIRFRAME: b"a"}), sitl=True, autostart=None)
    assert [m.component for m in unknown] == ["fc.file:etc/init.d-posix/airframes/*"] and not unknown[0].digests
    assert "SYS_AUTOSTART" in inv.problems[0].detail


def test_without_ftp_one_failing_file_measurement_stands_in() -> None:
    p = Pass(ReplayLink([]), QUICK, Inventory())  # type: ignore[arg-type]
    (m,) = px4.FILES_COLLECTOR.collect(p)
    assert m.component == "fc.file:*" and m.kind is Kind.SCRIPT and not m.digests


def test_startup_files_are_appraised_like_scripts() -> None:
    data = (DATA / "10040_sihsim_quadx").read_bytes()
    out, _ = _files(FakeFtp({AIRFRAME: data}), sitl=True)
    manifest = Manifest(version=1, expires=datetime.now(UTC) + timedelta(days=1), airframe=Airframe("sih"),
                        scripts=(Script(AIRFRAME, hashlib.sha256(data).hexdigest(), required=True),))
    assert [r.code for r in appraise(out, manifest).reasons if r.component.startswith("fc.file")] == []
    changed, _ = _files(FakeFtp({AIRFRAME: data + b"param set COM_ARM_AUTH_REQ 0\n"}), sitl=True)
    assert Code.SCRIPT_MISMATCH in appraise(changed, manifest).codes
    planted, _ = _files(FakeFtp({AIRFRAME: data, "etc/config.txt": b"param set X 1\n"}), sitl=True)
    assert Code.SCRIPT_UNKNOWN in appraise(planted, manifest).codes


# ---- image and FTP
def test_the_image_is_the_sitl_binary_px4_sitl_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "px4").write_bytes(b"\x7fELF px4")
    monkeypatch.setenv(px4.ENV_PX4_SITL, str(tmp_path))
    monkeypatch.setenv("FLIGHTSEAL_SITL_BINARY", str(tmp_path / "ardupilot"))  # never ArduPilot's
    opts = replace(QUICK, use_sitl_env=True)
    assert px4.sitl_binary(opts) == tmp_path / "bin" / "px4"
    monkeypatch.setenv(px4.ENV_PX4_SITL, str(tmp_path / "bin" / "px4"))
    assert px4.sitl_binary(opts) == tmp_path / "bin" / "px4"
    m = Measurement("fc.firmware", Kind.FIRMWARE, {}, "x", Strength.SELF_REPORTED,
                    px4.identity_claims(_recorded("autopilot_version")))
    p = Pass(ReplayLink([]), opts, Inventory(), ftp=None, identity=firmware.FirmwareIdentity(m, 1, ""))  # type: ignore[arg-type]
    (image,) = px4.IMAGE_COLLECTOR.collect(p)
    assert image.digests["sha256"] == hashlib.sha256(b"\x7fELF px4").hexdigest() and image.claims["sitl"] is True
    monkeypatch.delenv(px4.ENV_PX4_SITL)
    p = Pass(ReplayLink([]), opts, Inventory(), ftp=None, identity=firmware.FirmwareIdentity(m, 1, ""))  # type: ignore[arg-type]
    assert px4.IMAGE_COLLECTOR.collect(p) == [] and "no companion-side firmware file" in p.inv.problems[0].detail


def test_pxs_ftp_keeps_session_0_and_the_shared_sequence() -> None:
    link = ReplayLink([])
    shared = FtpClient(link)  # type: ignore[arg-type]
    shared._seq = 41
    p = Pass(link, QUICK, Inventory(), ftp=shared)  # type: ignore[arg-type]
    ftp = px4.px4_ftp(p)
    assert isinstance(ftp, px4.Px4FtpClient) and p.ftp is ftp and ftp._seq == 41
    ftp._new_session()
    ftp._new_session()
    assert ftp._session == 0 and px4.px4_ftp(p) is ftp


def test_the_pass_order_and_the_recorded_ftp_answers() -> None:
    assert [c.name for c in px4.COLLECTORS][:4] == ["identity", "params", "files", "image"]
    ftp = json.loads((DATA / "ftp.json").read_text())
    for path in ("@SYS/flash.bin", "@PARAM/param.pck", "etc/config.txt", "etc/extras.txt"):
        assert ftp["reads"][path].startswith("ERROR code=10"), path  # FileNotFound
    assert "F 10040_sihsim_quadx 973" in ftp["listing"]["etc/init.d-posix/airframes"]


# ---- against a live PX4 SITL
SITL_INSTANCE = 2  # the gate's tests use 0 and 1 (tests/px4_fixtures.py): both can run at once


def on_sitl(test: Callable[..., None]) -> Callable[..., None]:
    """The marks of a test on a live PX4 SITL: ``px4``, ``slow``, skipped with the reason when the
    build is not there."""
    for mark in PX4:
        test = mark(test)
    return test


@pytest.fixture
def sitl() -> Iterator[Any]:
    from sim.launchers.px4 import Px4Config, Px4Sitl

    with Px4Sitl(Px4Config(instance=SITL_INSTANCE, private_etc=True)) as running:  # etc/ ours to change
        yield running


def _open(sitl: Any) -> Link:
    return Link.open(LinkConfig(sitl.onboard_url, fc_system_id=sitl.sysid, fc_component_id=1))


def _pass(sitl: Any, opts: MeasureOptions = QUICK) -> Inventory:
    with _open(sitl) as link:
        return collect.measure(link, opts, collectors=px4.COLLECTORS)


def _by_component(inv: Inventory) -> dict[str, Measurement]:
    return {m.component: m for m in inv.measurements}


@on_sitl
def test_a_pass_on_px4_sitl_measures_what_the_build_holds(sitl: Any) -> None:
    build: Path = sitl.build
    inv = _pass(sitl, replace(QUICK, use_sitl_env=True))
    got = _by_component(inv)
    assert inv.problems == []
    header = (build / "src" / "lib" / "version" / "build_git_version.h").read_text()
    commit = re.search(r'PX4_GIT_VERSION_STR "([0-9a-f]{40})"', header)
    assert commit is not None and got["fc.firmware"].claims["git_hash"] == commit[1][:10]
    assert got["fc.firmware"].claims["autopilot"] == 12 and got["fc.firmware"].claims["board_id"] == 1
    image = got["fc.firmware-image"]
    assert image.digests["sha256"] == hashlib.sha256((build / "bin" / "px4").read_bytes()).hexdigest()
    airframe = (build / "etc" / "init.d-posix" / "airframes" / "10040_sihsim_quadx").read_bytes()
    assert got[f"fc.file:{AIRFRAME}"].digests["sha256"] == hashlib.sha256(airframe).hexdigest()
    assert {c for c in got if c.startswith("fc.file:")} == {f"fc.file:{AIRFRAME}"}
    values = inv.fc_params
    assert values is not None and len(values) > 800
    assert values["SYS_AUTOSTART"] == 10040 and values["MAV_SYS_ID"] == sitl.sysid
    assert not any(c.startswith(("mavlink:", "dronecan:")) for c in got)  # nothing else on the bus


def _arm_and_disarm(link: Link, timeout: float = 30.0) -> None:
    """Arm (PX4 refuses until its estimator is ready, some seconds after boot), then disarm."""
    deadline = time.monotonic() + timeout
    while True:
        ack = link.command_long(MAV_CMD_COMPONENT_ARM_DISARM, [1.0])
        if ack is not None and ack.result == MAV_RESULT_ACCEPTED:
            break
        assert time.monotonic() < deadline, f"PX4 did not arm within {timeout:.0f} s: {ack}"
        link.recv(["NONE"], 1.0)
    link.recv(["NONE"], 1.0)
    ack = link.command_long(MAV_CMD_COMPONENT_ARM_DISARM, [0.0])
    assert ack is not None and ack.result == MAV_RESULT_ACCEPTED
    while heartbeat_armed(link.fc_heartbeat) and time.monotonic() < deadline:
        link.recv(["HEARTBEAT"], 0.5)


@on_sitl
def test_px4_sitl_digest_survives_reboot_and_arming_and_names_a_change(sitl: Any) -> None:
    first = _pass(sitl)
    approved = first.fc_params
    assert approved is not None
    digest = _by_component(first)["fc.params"].digests
    sitl.reboot()  # the first boot listed CAL_BARO1..3_ID; this one does not
    with _open(sitl) as link:
        _arm_and_disarm(link)
        after = collect.measure(link, QUICK, collectors=px4.COLLECTORS)
        assert after.fc_params is not None and after.fc_params["COM_FLIGHT_UUID"] != approved["COM_FLIGHT_UUID"]
        assert _by_component(after)["fc.params"].digests == digest
        value = struct.unpack("<f", struct.pack("<i", 3))[0]  # NAV_RCL_ACT is INT32: bytewise, as PX4 reads it
        link.send(link.mav.param_set_encode(sitl.sysid, 1, b"NAV_RCL_ACT", value, MAV_PARAM_TYPE_INT32))
        link.recv(["NONE"], 0.5)
        changed = collect.measure(link, replace(QUICK, param_baseline=approved), collectors=px4.COLLECTORS)
    m = _by_component(changed)["fc.params"]
    assert m.digests != digest and m.claims["differ"] == 1 and m.claims["param.NAV_RCL_ACT"] == 3


@on_sitl
def test_px4_sitl_a_changed_airframe_file_and_a_planted_one_fail_appraisal(sitl: Any) -> None:
    first = _by_component(_pass(sitl))[f"fc.file:{AIRFRAME}"]
    manifest = Manifest(version=1, expires=datetime.now(UTC) + timedelta(days=1), airframe=Airframe("sih"),
                        scripts=(Script(AIRFRAME, first.digests["sha256"], required=True),))
    airframe = sitl.workdir / AIRFRAME
    airframe.write_bytes(airframe.read_bytes() + b"param set-default COM_ARM_AUTH_REQ 0\n")
    (sitl.workdir / "etc" / "config.txt").write_bytes(b"param set COM_ARM_AUTH_REQ 0\n")
    inv = _pass(sitl)
    got = _by_component(inv)
    assert got[f"fc.file:{AIRFRAME}"].digests["sha256"] != first.digests["sha256"]
    assert got["fc.file:etc/config.txt"].claims["role"] == "config.txt"
    codes = [(r.code, r.component) for r in appraise(inv.measurements, manifest).reasons
             if r.component.startswith("fc.file:")]
    assert set(codes) == {(Code.SCRIPT_UNKNOWN, "fc.file:etc/config.txt"),
                          (Code.SCRIPT_MISMATCH, f"fc.file:{AIRFRAME}")}


@on_sitl
def test_px4_sitl_ftp_serves_no_flash_and_a_partial_parameter_file(sitl: Any) -> None:
    with _open(sitl) as link:
        p = Pass(link, QUICK, Inventory(), ftp=FtpClient(link))
        assert p.ftp is not None
        p.ftp.reset_sessions()
        ftp = px4.px4_ftp(p)
        assert ftp is not None
        with pytest.raises(FtpNotFound):
            ftp.read_file(firmware.FLASH_PATH, 1024)
        stored = _bson(ftp.read_file("parameters.bson", 64 * 1024))
        values = params.from_param_protocol(link, QUICK, params.bytewise_value)
    assert 0 < len(stored) < 50 < len(values)
    assert {n: values[n] for n in stored if isinstance(stored[n], int)} == {
        n: v for n, v in stored.items() if isinstance(v, int)}



# ---- against the virtual PX4 (sim/vfc/px4.py, built from the other PX4 recordings): what CI runs
@pytest.fixture
def vpx4() -> Iterator[Any]:
    from sim.vfc.px4 import Px4VfcConfig, VirtualPx4

    with VirtualPx4(Px4VfcConfig(standby_delay=0.1)) as vehicle:
        yield vehicle


@pytest.fixture
def vlink(vpx4: Any) -> Iterator[Link]:
    with Link.open(LinkConfig(vpx4.url, fc_system_id=vpx4.sysid, fc_component_id=vpx4.compid)) as link:
        yield link


def test_a_pass_on_the_virtual_px4(vpx4: Any, vlink: Link) -> None:
    inv = collect.measure(vlink, QUICK, collectors=px4.COLLECTORS)
    got = _by_component(inv)
    # the only thing it cannot measure: the image (no @SYS/flash.bin, no companion-side file configured)
    assert [(p.component, p.code) for p in inv.problems] == [("fc.firmware-image", Code.MEASUREMENT_MISSING)]
    assert "@SYS/flash.bin" in inv.problems[0].detail
    ident = got["fc.firmware"].claims
    assert ident["git_hash"] == "6ea3539157" and ident["version"] == "1.16.0" and ident["autopilot"] == 12
    values = inv.fc_params
    assert values is not None and set(values) == set(vpx4.param_names())
    assert all(values[n] == vpx4.get_param(n) or paramdigest.same_value(values[n], vpx4.get_param(n))
               for n in values)
    assert {c: m.digests["sha256"] for c, m in got.items() if c.startswith("fc.file:")} == {
        f"fc.file:{AIRFRAME}": hashlib.sha256(vpx4.read_file(AIRFRAME)).hexdigest()}


def test_on_the_virtual_px4_a_change_is_named_and_a_planted_file_fails(vpx4: Any, vlink: Link) -> None:
    first = collect.measure(vlink, QUICK, collectors=px4.COLLECTORS)
    approved = first.fc_params
    assert approved is not None
    airframe = _by_component(first)[f"fc.file:{AIRFRAME}"]
    manifest = Manifest(version=1, expires=datetime.now(UTC) + timedelta(days=1), airframe=Airframe("sih"),
                        scripts=(Script(AIRFRAME, airframe.digests["sha256"], required=True),))
    vpx4.set_param("NAV_RCL_ACT", 3)
    vpx4.set_param("COM_FLIGHT_UUID", 7)  # volatile: not a change
    vpx4.write_file("etc/config.txt", b"param set COM_ARM_AUTH_REQ 0\n")
    inv = collect.measure(vlink, replace(QUICK, param_baseline=approved), collectors=px4.COLLECTORS)
    m = _by_component(inv)["fc.params"]
    assert m.claims["differ"] == 1 and m.claims["param.NAV_RCL_ACT"] == 3
    assert Code.SCRIPT_UNKNOWN in appraise(inv.measurements, manifest).codes
