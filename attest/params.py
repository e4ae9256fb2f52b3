"""A parameter-set digest that does not depend on how the parameters were fetched.

The same FC gives its parameters as float32 PARAM_VALUEs or as typed records in
``@PARAM/param.pck`` (whose bytes even depend on the FTP read size). So the digest is over a
canonical text form, one ``NAME=value`` line per parameter sorted by name, with integral values
written as integers and the rest as the shortest repr of the float32 value. Volatile values
(statistics, calibration results that change at every boot) are excluded by name patterns that
the manifest can override.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import struct
from collections.abc import Iterable, Mapping

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
)


def canonical_value(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return repr(value)
    f32 = struct.unpack("<f", struct.pack("<f", value))[0]
    if f32.is_integer() and abs(f32) < 2**53:
        return str(int(f32))
    return repr(f32)


def is_excluded(name: str, exclusions: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in exclusions)


def canonical_text(params: Mapping[str, float], exclusions: Iterable[str] = DEFAULT_EXCLUSIONS) -> bytes:
    patterns = tuple(exclusions)
    lines = [f"{name}={canonical_value(params[name])}\n" for name in sorted(params)
             if not is_excluded(name, patterns)]
    return "".join(lines).encode()


def digest(params: Mapping[str, float], exclusions: Iterable[str] = DEFAULT_EXCLUSIONS) -> str:
    return hashlib.sha256(canonical_text(params, exclusions)).hexdigest()


def same_value(a: float, b: float) -> bool:
    return canonical_value(a) == canonical_value(b)
