"""FC firmware: what the firmware says it is (AUTOPILOT_VERSION), and the image bytes.

Identity claims the appraisal reads: ``git_hash`` (the 8 hex characters ArduPilot puts in
``flight_custom_version``), ``version`` ("4.7.0"), ``board_id`` (``board_version >> 16``, the
APJ board id), ``uid``. ArduPilot always sends ``uid`` = 0 and puts the MCU's unique id in
``uid2``; so the ``uid`` claim is ``uid2`` in hex without its trailing zero bytes, or the 64-bit
``uid`` in hex when a firmware does fill it (empty when both are zero).

The image, strongest source first:

1. ``@SYS/flash.bin`` over MAVLink FTP (ChibiOS boards): the program flash as the FC reads it,
   hashed with SHA-256 (strength ``flash-read``). A cold pass reads it all; a warm pass asks the
   FC for CalcFileCRC32 and reuses the cached SHA-256 when the CRC matches the last full read
   and that read is younger than ``full_read_interval`` (``method`` says which). CRC32 is not a
   cryptographic hash: the periodic full read bounds how long a crafted collision could hide.
2. A firmware file on the companion: the configured image, or in SITL (board id 0) the binary in
   ``FLIGHTSEAL_SITL_BINARY``, which is exactly what the SITL process runs (strength
   ``image-and-bootloader``, source ``file:``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.mavlink.ftp import FtpClient, FtpError, FtpNotFound
from agent.mavlink.ftpwire import crc32_ardupilot
from agent.mavlink.ids import MSG_AUTOPILOT_VERSION
from agent.mavlink.link import Link
from agent.measure.base import CollectError, Collector, Inventory, MeasureOptions, Pass, sha256_json
from agent.measure.imagecache import CachedImage, ImageCache
from attest.models import ClaimValue, Kind, Measurement, Strength
from hardware.regular import open_regular

FLASH_PATH = "@SYS/flash.bin"
IDENTITY = "fc.firmware"
IMAGE = "fc.firmware-image"
VERSION_TYPES = {0: "dev", 64: "alpha", 128: "beta", 192: "rc", 255: "official"}


def _text(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("ascii", "replace")


def _uid(uid: int, uid2: bytes) -> str:
    if any(uid2):
        return uid2.rstrip(b"\0").hex()
    return f"{uid:016x}" if uid else ""


@dataclass(frozen=True)
class FirmwareIdentity:
    measurement: Measurement
    board_id: int
    uid: str


def identity_claims(av: Any) -> dict[str, ClaimValue]:
    v = int(av.flight_sw_version)
    uid2 = bytes(av.uid2)
    claims: dict[str, ClaimValue] = {
        "git_hash": _text(av.flight_custom_version),
        "version": f"{(v >> 24) & 0xFF}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}",
        "version_type": VERSION_TYPES.get(v & 0xFF, str(v & 0xFF)),
        "flight_sw_version": f"0x{v:08x}",
        "board_id": int(av.board_version) >> 16,
        "board_version": int(av.board_version),
        "vendor_id": int(av.vendor_id),
        "product_id": int(av.product_id),
        "uid": _uid(int(av.uid), uid2),
        "uid2": uid2.hex(),
        "capabilities": f"0x{int(av.capabilities):x}",
    }
    if any(av.os_custom_version):
        claims["os_git_hash"] = _text(av.os_custom_version)
    if any(av.middleware_custom_version):
        claims["middleware_git_hash"] = _text(av.middleware_custom_version)
    return claims


def collect_identity(link: Link, timeout: float = 1.0, retries: int = 3,
                     claims_of: Callable[[Any], dict[str, ClaimValue]] = identity_claims) -> FirmwareIdentity:
    """AUTOPILOT_VERSION as the ``fc.firmware`` measurement; ``claims_of`` reads the message the way
    the FC fills it (ArduPilot's :func:`identity_claims` by default; PX4 encodes it otherwise)."""
    av = link.request_message(MSG_AUTOPILOT_VERSION, "AUTOPILOT_VERSION", timeout=timeout, retries=retries)
    if av is None:
        raise CollectError(f"the FC did not answer MAV_CMD_REQUEST_MESSAGE(AUTOPILOT_VERSION) after {retries} "
                           f"tries of {timeout:.1f} s")
    claims = claims_of(av)
    hb = link.fc_heartbeat
    if hb is not None:
        claims["mav_type"] = int(hb.type)
        claims["autopilot"] = int(hb.autopilot)
    m = Measurement(IDENTITY, Kind.FIRMWARE, {"sha256": sha256_json(claims)}, "mavlink:AUTOPILOT_VERSION",
                    Strength.SELF_REPORTED, claims)
    return FirmwareIdentity(m, int(claims["board_id"]), str(claims["uid"]))


def _image_measurement(sha256: str, source: str, strength: Strength, claims: dict[str, ClaimValue]) -> Measurement:
    return Measurement(IMAGE, Kind.FIRMWARE_IMAGE, {"sha256": sha256}, source, strength, claims)


def _flash(ftp: FtpClient, ident: FirmwareIdentity, opts: MeasureOptions, cache: ImageCache | None) -> Measurement:
    key = f"{ident.uid or 'no-uid'}:{ident.measurement.claims.get('git_hash', '')}"
    cached = cache.get(key) if cache is not None else None
    now = time.time()
    if cached is not None and now - cached.read_at < opts.full_read_interval:
        crc = ftp.crc32(FLASH_PATH)
        if crc == cached.crc32:
            return _image_measurement(cached.sha256, f"mavlink-ftp-crc32:{FLASH_PATH}", Strength.FLASH_READ, {
                "method": "crc32-cached", "crc32": f"{crc:08x}", "size": cached.size,
                "full_read_age_s": int(now - cached.read_at)})

    def progress(done: int, reported: int | None) -> None:
        if opts.progress is not None:
            opts.progress(FLASH_PATH, done, None)  # @SYS reports 100000 for every file: no total to show

    data = ftp.read_file(FLASH_PATH, opts.max_image_bytes, progress)
    sha = hashlib.sha256(data).hexdigest()
    crc = crc32_ardupilot(data)
    if cache is not None:
        cache.put(key, CachedImage(sha, crc, len(data), now))
    return _image_measurement(sha, f"mavlink-ftp:{FLASH_PATH}", Strength.FLASH_READ,
                              {"method": "full-read", "crc32": f"{crc:08x}", "size": len(data)})


def _file(path: Path, opts: MeasureOptions, sitl: bool) -> Measurement:
    h = hashlib.sha256()
    size = 0
    try:
        with open_regular(path) as f:
            while block := f.read(1 << 20):
                size += len(block)
                if size > opts.max_file_image_bytes:
                    raise CollectError(f"firmware file {path} is larger than {opts.max_file_image_bytes} bytes")
                h.update(block)
    except OSError as exc:
        raise CollectError(f"cannot read firmware file {path}: {exc.strerror or exc}") from None
    claims: dict[str, ClaimValue] = {"method": "companion-file", "size": size, "path": str(path)}
    if sitl:
        claims["sitl"] = True
    return _image_measurement(h.hexdigest(), f"file:{path}", Strength.IMAGE_AND_BOOTLOADER, claims)


def collect_image(ftp: FtpClient | None, ident: FirmwareIdentity, opts: MeasureOptions,
                  cache: ImageCache | None, inv: Inventory, sitl_binary: Path | None = None) -> Measurement | None:
    """The strongest image measurement available, or None with the reason recorded in ``inv``.

    ``sitl_binary``: the SITL binary the caller knows this FC runs (PX4's profile decides that
    itself); None keeps ArduPilot's rule, ``FLIGHTSEAL_SITL_BINARY`` when the board id is 0."""
    tried: list[str] = []
    if opts.flash_read and ftp is not None:
        try:
            return _flash(ftp, ident, opts, cache)
        except FtpNotFound:
            tried.append(f"the FC serves no {FLASH_PATH}")
        except FtpError as exc:
            tried.append(str(exc))
    if opts.firmware_file is not None:
        return _file(opts.firmware_file, opts, sitl=False)
    if sitl_binary is None and ident.board_id == 0:
        sitl_binary = opts.sitl_binary()
    if sitl_binary is not None:
        return _file(sitl_binary, opts, sitl=True)
    tried.append("no companion-side firmware file is configured")
    inv.missing(IMAGE, "; ".join(tried))
    return None


def _identity_step(p: Pass) -> list[Measurement]:
    p.identity = collect_identity(p.link)
    return [p.identity.measurement]


def _image_step(p: Pass) -> list[Measurement]:
    if p.identity is None:
        raise CollectError("not measured: the firmware identity is unknown")
    image = collect_image(p.ftp, p.identity, p.opts, p.cache, p.inv)
    return [] if image is None else [image]


IDENTITY_COLLECTOR = Collector("identity", IDENTITY, _identity_step)
IMAGE_COLLECTOR = Collector("image", IMAGE, _image_step)
