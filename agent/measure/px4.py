"""PX4's collectors: firmware identity and image, the parameter set, the startup files, the parts.

The measurements have ArduPilot's names and kinds wherever they mean the same, so the appraisal
and manifests work unchanged; what differs is how PX4 says things (facts checked on a PX4 v1.16.0
SITL, recorded under ``tests/data/px4-measure/``):

* **Identity** (``fc.firmware``): AUTOPILOT_VERSION, decoded PX4's way (:func:`identity_claims`).
* **Image** (``fc.firmware-image``): PX4 serves no ``@SYS/flash.bin`` (its FTP answers
  FileNotFound), so the image is a companion-side file: the configured one, or for PX4 SITL the
  ``bin/px4`` that ``FLIGHTSEAL_PX4_SITL`` points at (the build directory, or the binary itself).
* **Parameters** (``fc.params``): the PARAM protocol, values decoded by type (PX4 copies an INT32's
  bytes into the float field). Not PX4's parameter file: ``parameters.bson`` (SITL's working
  directory; ``/fs/mtd_params`` or ``/fs/microsd/params`` on boards) holds only the parameters set
  away from their defaults (17 of 1000-odd on a fresh SITL), and the defaults live in the firmware,
  not in any file the FC serves, so the file cannot give the digest over the whole set that the
  PARAM protocol gives. The digest and the named differences are ``agent.measure.params``'s.
* **Startup files** (``fc.file:<path>``): the airframe file ``SYS_AUTOSTART`` selects and the
  SD card's startup hooks (:data:`HARDWARE_FILES`), read over MAVLink FTP. They are NSH scripts PX4
  runs at boot, so they are measured and appraised as scripts (``Kind.SCRIPT``: a file the manifest
  lists must match its sha256, an unlisted one fails). PX4 1.16 has no mixer files: control
  allocation (``CA_*`` parameters, covered by the parameter digest) replaced them in 1.14, and
  neither startup script loads a mixer.
* **Parts** (``mavlink:SYS/COMP``): :mod:`agent.measure.components` as is. PX4 has no DroneCAN
  forwarding over MAVLink (ArduPilot's MAV_CMD_CAN_FORWARD), so the DroneCAN scan finds no bus
  (``CAN_P1_DRIVER`` is an ArduPilot parameter) and is skipped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.mavlink.ftp import FtpClient, FtpError, FtpNotFound
from agent.mavlink.ftpwire import crc32_ardupilot
from agent.mavlink.ids import MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE
from agent.measure import companion, components, firmware, params
from agent.measure.base import CollectError, Collector, Inventory, MeasureOptions, Pass
from agent.measure.firmware import VERSION_TYPES, FirmwareIdentity
from attest.models import ClaimValue, Kind, Measurement, Strength

ENV_PX4_SITL = "FLIGHTSEAL_PX4_SITL"
FILE_PREFIX = "fc.file:"
PX4_SITL_BOARD_VERSION = 1  # px4_board_version() on every non-NuttX build; CONFIG_CDCACM_PRODUCTID on boards

# Where the FC's startup files are, as its MAVLink FTP names them. PX4 SITL serves its working
# directory (``etc`` is a link to the build's ROMFS copy); a board serves its whole file system.
SITL_AIRFRAMES = "etc/init.d-posix/airframes"
SITL_FILES: tuple[str, ...] = ("etc/config.txt", "etc/extras.txt")  # SITL's rcS runs neither: measured if there
HARDWARE_AIRFRAMES = "/etc/init.d/airframes"
HARDWARE_FILES: tuple[str, ...] = (
    "/fs/microsd/etc/rc.txt",  # replaces the whole boot (rcS runs it instead of itself)
    "/fs/microsd/etc/config.txt",  # run after the airframe (FCONFIG)
    "/fs/microsd/etc/extras.txt",  # run at the end of the boot (FEXTRAS)
)
HARDWARE_EXT_AUTOSTART = "/fs/microsd/ext_autostart"  # external airframes: rc.autostart_ext runs rc.autostart there

# Parameters PX4 changes by itself (never a supply-chain change): left out of the digest. Found on
# PX4 v1.16.0 SITL (SIH quadrotor, airframe 10040) by measuring every parameter at the first boot of a
# fresh working directory, 60 s later, after a reboot, after an arm and disarm, after a takeoff and
# landing, after more reboots, and after a reboot at another place (tests/data/px4-measure/volatile.json
# and its README): these are the names whose value or presence differed, and nothing else did (60 s on
# the ground and a plain reboot changed nothing). Patterns are ``attest.params``' syntax: fnmatch
# (``*``, ``?``, ``[...]``), case-sensitive, matched against the whole name.
VOLATILE_PARAMS: tuple[str, ...] = (
    "COM_FLIGHT_UUID",  # commander counts it up at every arming (Commander.cpp), saved at once
    "LND_FLIGHT_T_LO",  # total flight time in µs, saved by the land detector at landing (LandDetector.cpp)
    "LND_FLIGHT_T_HI",  # its high word: not seen to change (it does after 2^32 µs, 71.6 min of flight)
    "EKF2_MAG_DECL",  # declination, saved by ekf2 when the one at the vehicle's place differs by > 0.1°
    # Listed (value 0) at the first boot of a fresh SITL, gone after the reboot. PX4 lists only the
    # parameters some module has looked up, and a sensor looks for its calibration slot from slot 0
    # on (FindCurrentCalibrationIndex, lib/sensor_calibration/Utilities.cpp): at the first boot the
    # baro has no slot yet (SITL's rcS presets the other sensors' ids, not the baro's), so all four
    # are looked up; once CAL_BARO0_ID is saved, later boots stop at slot 0. CAL_BARO0_ID, the baro
    # in use, stays covered. (On a board the same happens to a sensor's slots until it is
    # calibrated: a manifest is made from a calibrated, rebooted vehicle.)
    "CAL_BARO[1-3]_ID",
)
# Not volatile, though they changed in the recording: SIH_LOC_LAT0/LON0, which rcS sets from the
# operator's PX4_HOME_LAT/LON (the simulator's place, set from outside, as a change should be seen).


def _reversed_hex(raw: Any) -> str:
    """PX4 copies a uint64 git hash little-endian into the 8-byte field: the hash reads backwards."""
    return bytes(raw)[::-1].hex()


def identity_claims(av: Any) -> dict[str, ClaimValue]:
    """ArduPilot's identity claims (``firmware.identity_claims``), with PX4's encodings.

    * ``git_hash``: PX4 (``mavlink_main.cpp``) sends the first 5 bytes of the commit hash in the top
      5 bytes of a little-endian uint64 and its vendor version (major, minor, patch) in the low 3:
      ``flight_custom_version`` = ``00 00 00 57 91 53 a3 6e`` for commit ``6ea3539157…``. Reversed,
      as QGroundControl reads it, that is ``6ea3539157000000``; the claim is the 10 hex digits of
      the hash (``git rev-parse --short=10``), and ``vendor_version`` the rest when not 0.0.0.
    * ``os_git_hash``: NuttX's hash, all 8 bytes, reversed the same way (absent on SITL: zero).
    * ``board_id``: ``board_version`` as sent, PX4's board id (``CONFIG_CDCACM_PRODUCTID`` on a
      board, 1 on SITL), not ArduPilot's ``>> 16``.
    * ``uid``: the 64-bit ``uid`` PX4 always fills (two words of the MCU's unique id; on SITL a fixed
      value plus the system id - 1); ``uid2`` keeps the 18-byte PX4 GUID in hex.
    """
    claims = firmware.identity_claims(av)
    custom = _reversed_hex(av.flight_custom_version)
    v = int(av.flight_sw_version)
    claims.update({
        "git_hash": custom[:10] if any(bytes(av.flight_custom_version)[3:]) else "",
        "version": f"{(v >> 24) & 0xFF}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}",
        "version_type": VERSION_TYPES.get(v & 0xFF, str(v & 0xFF)),
        "board_id": int(av.board_version),
        "uid": f"{int(av.uid):016x}" if int(av.uid) else "",
    })
    vendor = bytes(av.flight_custom_version)[:3][::-1]
    if any(vendor):
        claims["vendor_version"] = ".".join(str(b) for b in vendor)
    claims.pop("os_git_hash", None)
    claims.pop("middleware_git_hash", None)
    if any(bytes(av.os_custom_version)):
        claims["os_git_hash"] = _reversed_hex(av.os_custom_version)
    if any(bytes(av.middleware_custom_version)):
        claims["middleware_git_hash"] = _reversed_hex(av.middleware_custom_version)[:10]
    return claims


def is_sitl(ident: FirmwareIdentity) -> bool:
    """PX4 built for POSIX (SITL): board version 1 and no USB vendor/product id (a board sends its
    product id as board version)."""
    c = ident.measurement.claims
    return c.get("board_version") == PX4_SITL_BOARD_VERSION and c.get("vendor_id") == 0 and c.get("product_id") == 0


def sitl_binary(opts: MeasureOptions) -> Path | None:
    """The PX4 SITL binary ``FLIGHTSEAL_PX4_SITL`` names: the build directory (``bin/px4`` in it) or
    the binary itself; None when unset (or ``use_sitl_env`` is off)."""
    value = os.environ.get(ENV_PX4_SITL, "") if opts.use_sitl_env else ""
    if not value:
        return None
    path = Path(value)
    return path / "bin" / "px4" if path.is_dir() else path


class Px4FtpClient(FtpClient):
    """MAVLink FTP as PX4's server speaks it: one session, always 0, whatever the request asks.

    PX4 (``mavlink_ftp.cpp``) answers OpenFileRO with session 0; the shared client starts a new
    session number per open and matches replies by it, so against PX4 every open timed out ("no
    reply", seen on SITL). Everything else is the shared client's."""

    def _new_session(self) -> None:
        self._session = 0


def px4_ftp(p: Pass) -> FtpClient | None:
    """The pass's FTP client, made PX4's (the same link, limits, target and sequence numbers)."""
    ftp = p.ftp
    if ftp is None or isinstance(ftp, Px4FtpClient):
        return ftp
    px4 = Px4FtpClient(ftp.link, ftp.limits, ftp.target)
    px4.__dict__.update(ftp.__dict__)  # go on with the shared client's sequence numbers
    p.ftp = px4
    return px4


# ---- identity and image
def _identity_step(p: Pass) -> list[Measurement]:
    p.identity = firmware.collect_identity(p.link, claims_of=identity_claims)
    return [p.identity.measurement]


def _image_step(p: Pass) -> list[Measurement]:
    """``@SYS/flash.bin`` is asked for all the same (a PX4 that serves one someday is read), then the
    companion-side file; the SITL binary only when the identity says SITL."""
    if p.identity is None:
        raise CollectError("not measured: the firmware identity is unknown")
    binary = sitl_binary(p.opts) if is_sitl(p.identity) else None
    opts = replace(p.opts, use_sitl_env=False)  # never ArduPilot's FLIGHTSEAL_SITL_BINARY
    image = firmware.collect_image(px4_ftp(p), p.identity, opts, p.cache, p.inv, sitl_binary=binary)
    return [] if image is None else [image]


# ---- parameters
def value_decoder(ident: FirmwareIdentity | None) -> params.ValueDecoder:
    """Bytewise (PX4's way) unless AUTOPILOT_VERSION says the FC does not encode so."""
    if ident is not None:
        caps = str(ident.measurement.claims.get("capabilities", ""))
        try:
            if not int(caps, 16) & MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE:
                return params.c_cast_value
        except ValueError:
            pass
    return params.bytewise_value


def collect_params(p: Pass) -> Measurement | None:
    """Every parameter by the PARAM protocol, decoded by type; see the module docstring for why not
    ``parameters.bson``."""
    if p.opts.param_source == "ftp":
        p.inv.missing(params.COMPONENT, "PX4 serves no complete parameter file (parameters.bson holds only the "
                                        "parameters set away from their defaults): use the PARAM protocol")
        return None
    try:
        values = params.from_param_protocol(p.link, p.opts, value_decoder(p.identity))
    except CollectError as exc:
        p.inv.missing(params.COMPONENT, str(exc))
        return None
    return params.params_measurement(values, "mavlink:PARAM_VALUE", "param-protocol", p.opts, p.inv)


def _params_step(p: Pass) -> list[Measurement]:
    m = collect_params(p)
    return [] if m is None else [m]


# ---- startup files
def _file_failed(path: str, directory: str, error: str) -> Measurement:
    """A file that could not be read or listed: no digest, so no manifest entry can match it."""
    return Measurement(f"{FILE_PREFIX}{path}", Kind.SCRIPT, {}, f"mavlink-ftp:{directory}", Strength.SELF_REPORTED,
                       {"path": path, "dir": directory, "error": error[:200]})


def _read(ftp: FtpClient, path: str, directory: str, role: str, opts: MeasureOptions, inv: Inventory,
          optional: bool = False) -> list[Measurement]:
    """One file's measurement; an ``optional`` file that is absent is no measurement (a manifest can
    still require it), any other failure a measurement without digest."""
    try:
        data = ftp.read_file(path, opts.max_script_bytes)
    except FtpNotFound as exc:
        if optional:
            return []
        inv.missing(f"{FILE_PREFIX}{path}", str(exc))
        return [_file_failed(path, directory, str(exc))]
    except FtpError as exc:
        inv.missing(f"{FILE_PREFIX}{path}", str(exc))
        return [_file_failed(path, directory, str(exc))]
    claims: dict[str, ClaimValue] = {"path": path, "dir": directory, "size": len(data), "role": role}
    return [Measurement(f"{FILE_PREFIX}{path}", Kind.SCRIPT,
                        {"sha256": hashlib.sha256(data).hexdigest(), "crc32": f"{crc32_ardupilot(data):08x}"},
                        f"mavlink-ftp:{path}", Strength.SELF_REPORTED, claims)]


def _safe_name(name: str) -> bool:
    """A name a listing may give that stays inside its directory (PX4 SITL does not filter ``..``)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _airframe(ftp: FtpClient, directory: str, opts: MeasureOptions, inv: Inventory) -> list[Measurement]:
    """The airframe files of ``SYS_AUTOSTART``: every ``<SYS_AUTOSTART>_*`` in ``directory``. SITL's
    rcS runs the last match without a dot and, at the end of the boot, its ``.post``; a board's
    rc.autostart picks one by number. Measuring every match is the safe superset: a planted file
    that would win the match shows up as a file no manifest lists."""
    autostart = (inv.fc_params or {}).get("SYS_AUTOSTART")
    if autostart is None:
        inv.missing(f"{FILE_PREFIX}{directory}/*", "SYS_AUTOSTART is unknown (parameters not measured): the "
                                                    "airframe file could not be chosen")
        return [_file_failed(f"{directory}/*", directory, "SYS_AUTOSTART is unknown")]
    if int(autostart) == 0:
        return []  # no airframe selected: rcS runs none
    prefix = f"{int(autostart)}_"
    try:
        names = sorted(e.name for e in ftp.list_dir(directory)
                       if not e.is_dir and _safe_name(e.name) and e.name.startswith(prefix))
    except FtpNotFound:
        return []
    except FtpError as exc:
        return _unlisted(directory, exc, inv)
    out: list[Measurement] = []
    for name in names[:opts.max_scripts]:
        out += _read(ftp, f"{directory}/{name}", directory, "airframe" if "." not in name else "airframe-hook", opts,
                     inv)
    return out


def _unlisted(directory: str, exc: FtpError, inv: Inventory) -> list[Measurement]:
    """A directory that exists but cannot be listed: reported missing, and a measurement that fails."""
    inv.missing(f"{FILE_PREFIX}{directory}/*", f"cannot list {directory}: {exc}")
    return [_file_failed(f"{directory}/*", directory, str(exc))]


def _tree(ftp: FtpClient, root: str, role: str, opts: MeasureOptions, inv: Inventory) -> list[Measurement]:
    """Every file under ``root`` (bounded depth and count), or nothing when ``root`` is absent."""
    files: list[str] = []

    def walk(path: str, depth: int) -> None:
        for entry in ftp.list_dir(path):
            if not _safe_name(entry.name):
                continue
            child = f"{path}/{entry.name}"
            if entry.is_dir:
                if depth < opts.max_script_depth:
                    walk(child, depth + 1)
            else:
                files.append(child)
                if len(files) > opts.max_scripts:
                    raise FtpError("list", root, None, f"more than {opts.max_scripts} files")

    try:
        walk(root, 0)
    except FtpNotFound:
        return []
    except FtpError as exc:
        return _unlisted(root, exc, inv)
    out: list[Measurement] = []
    for path in sorted(files):
        out += _read(ftp, path, root, role, opts, inv)
    return out


def collect_files(ftp: FtpClient, sitl: bool, opts: MeasureOptions, inv: Inventory) -> list[Measurement]:
    """The startup files of this FC (SITL's or a board's layout)."""
    if sitl:
        out = _airframe(ftp, SITL_AIRFRAMES, opts, inv)
        for path in SITL_FILES:
            out += _read(ftp, path, path.rsplit("/", 1)[0], path.rsplit("/", 1)[1], opts, inv, optional=True)
        return out
    out = _airframe(ftp, HARDWARE_AIRFRAMES, opts, inv)
    for path in HARDWARE_FILES:
        out += _read(ftp, path, path.rsplit("/", 1)[0], path.rsplit("/", 1)[1], opts, inv, optional=True)
    out += _tree(ftp, HARDWARE_EXT_AUTOSTART, "ext-autostart", opts, inv)
    return out


def _files_step(p: Pass) -> list[Measurement]:
    ftp = px4_ftp(p)
    if ftp is None:  # one failing measurement, so a changed startup file never passes unseen
        return [Measurement(f"{FILE_PREFIX}*", Kind.SCRIPT, {}, "mavlink-ftp", Strength.SELF_REPORTED,
                            {"path": "*", "error": "MAVLink FTP does not answer: the startup files could not be read"})]
    return collect_files(ftp, p.identity is not None and is_sitl(p.identity), p.opts, p.inv)


IDENTITY_COLLECTOR = Collector("identity", firmware.IDENTITY, _identity_step)
PARAMS_COLLECTOR = Collector("params", params.COMPONENT, _params_step)
FILES_COLLECTOR = Collector("files", f"{FILE_PREFIX}*", _files_step)
IMAGE_COLLECTOR = Collector("image", firmware.IMAGE, _image_step)
PARAM_DECODE: Callable[[Any], float] = params.bytewise_value  # how a PX4 PARAM_VALUE reads (the daemon's watch)

# The pass, in order: identity (it decides SITL and the parameter encoding), parameters (the
# airframe file is SYS_AUTOSTART's), the startup files and the image over FTP, then the parts
# (heard for a while by then) and the companion.
COLLECTORS: tuple[Collector, ...] = (IDENTITY_COLLECTOR, PARAMS_COLLECTOR, FILES_COLLECTOR, IMAGE_COLLECTOR,
                                     components.COLLECTOR, companion.COLLECTOR)

__all__ = ["COLLECTORS", "ENV_PX4_SITL", "PARAM_DECODE", "VOLATILE_PARAMS", "identity_claims"]
