"""A parameter-set digest that does not depend on how the parameters were fetched, and the
differences that explain a digest that does not match.

The same FC gives its parameters as float32 PARAM_VALUEs or as typed records in
``@PARAM/param.pck`` (whose bytes even depend on the FTP read size). So the digest is over a
canonical text form, one ``NAME=value`` line per parameter sorted by name, with integral values
written as integers and the rest as the shortest repr of the float32 value. Volatile values
(statistics, calibration results that change at every boot, what a ground station changes by
connecting) are excluded by name patterns that the manifest can override; ADR 0011 says how the
default list was recorded on SITL.

A measurement names what differs from the approved set (ADR 0010): the approved values with the
named differences applied must give the measured digest, so a verifier can check that the names
are the whole story without the device sending every value.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import math
import re
import struct
from collections.abc import Iterable, Mapping

# Stream rates: REQUEST_DATA_STREAM (every ground station sends it on connect) sets them in memory
# for the channel it arrived on. ``MAVn_*`` since 4.7 (MAV1 = channel 0), ``SRn_*`` before.
STREAM_RATES: tuple[str, ...] = ("RAW_SENS", "EXT_STAT", "RC_CHAN", "RAW_CTRL", "POSITION", "EXTRA1", "EXTRA2",
                                 "EXTRA3", "PARAMS", "ADSB")
STREAM_RATE_EXCLUSIONS: tuple[str, ...] = tuple(
    f"{prefix}_{rate}" for rate in STREAM_RATES for prefix in ("SR[0-9]", "MAV[1-9]", "MAV1[0-9]"))

DEFAULT_EXCLUSIONS: tuple[str, ...] = (
    "STAT_*",  # flight statistics: runtime, boot count, flight time
    "BARO*_GND_PRESS",  # ground pressure, re-measured at every boot
    "BARO*_GND_TEMP",
    "INS_GYR*OFFS_*",  # gyro offsets, re-calibrated at every boot
    "INS_GYROFFS_*",
    "INS_GYR*_CALTEMP",
    "INS_ACC*_CALTEMP",
    "INS_ACC*_ID",  # sensor ids: reported as 0 until the sensors are probed
    "INS_GYR*_ID",
    "MIS_TOTAL",  # mission item count
    "COMPASS_DEC",  # declination, set from the GPS position when COMPASS_AUTODEC=1 (seen in SITL)
    "MOT_THST_HOVER",  # hover thrust, learned in flight and saved at disarm when MOT_HOVER_LEARN=2 (SITL)
    *STREAM_RATE_EXCLUSIONS,
)

ABSENT = "absent"  # claim value of an approved parameter the FC does not have


def canonical_value(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return repr(value)
    try:
        f32 = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # beyond float32: no FC parameter holds it, so it equals none of theirs
        return repr(value)
    if f32.is_integer() and abs(f32) < 2**53:
        return str(int(f32))
    return repr(f32)


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled regex for a whole exclusion list: it runs once per parameter of every pass."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or r"(?!)")


def is_excluded(name: str, exclusions: Iterable[str]) -> bool:
    return _matcher(tuple(exclusions)).match(name) is not None


def canonical_text(params: Mapping[str, float], exclusions: Iterable[str] = DEFAULT_EXCLUSIONS) -> bytes:
    matcher = _matcher(tuple(exclusions))
    lines = [f"{name}={canonical_value(params[name])}\n" for name in sorted(params)
             if matcher.match(name) is None]
    return "".join(lines).encode()


def digest(params: Mapping[str, float], exclusions: Iterable[str] = DEFAULT_EXCLUSIONS) -> str:
    return hashlib.sha256(canonical_text(params, exclusions)).hexdigest()


def same_value(a: float, b: float) -> bool:
    return canonical_value(a) == canonical_value(b)


def included(params: Mapping[str, float], exclusions: Iterable[str]) -> dict[str, float]:
    """The parameters the digest covers."""
    matcher = _matcher(tuple(exclusions))
    return {name: value for name, value in params.items() if matcher.match(name) is None}


def differences(approved: Mapping[str, float], measured: Mapping[str, float],
                exclusions: Iterable[str]) -> dict[str, float | None]:
    """Every covered parameter whose measured value is not the approved one, sorted by name.

    ``None`` marks an approved parameter the FC does not have; a name not in ``approved`` is a
    parameter the approved set does not know.
    """
    matcher = _matcher(tuple(exclusions))
    out: dict[str, float | None] = {}
    for name in sorted(set(approved) | set(measured)):
        if matcher.match(name) is not None:
            continue
        if name not in measured:
            out[name] = None
        elif name not in approved or not same_value(measured[name], approved[name]):
            out[name] = measured[name]
    return out


def apply(approved: Mapping[str, float], changes: Mapping[str, float | None]) -> dict[str, float]:
    """``approved`` with ``changes`` applied (``None`` removes): what the FC must hold if they are all."""
    out = dict(approved)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out
