"""Decoder for ArduPilot's packed parameter file ``@PARAM/param.pck``.

One FTP read of this file replaces about 1400 PARAM_VALUE round trips, so the parameter
collector prefers it. The format (documented in ArduPilot's ``AP_Filesystem_Param.cpp`` and
decoded by pymavlink's ``MAVFTP.ftp_param_decode``) is a 6-byte header ``<HHH`` (magic 0x671b, or
0x671c with defaults; number of parameters in the file; total on the FC), then one record per
parameter: a type/flags byte, a byte with the shared-prefix length and the suffix length − 1,
the name suffix, the value (and the default when flagged). Zero bytes between records are padding
that keeps a value from crossing an FTP read boundary, so the bytes depend on the read size but
the decoded content does not.

This decoder is strict and bounded: it reads bytes from a flight controller, which is not trusted
to be well formed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.mavlink import ids
from attest.errors import FlightSealError

MAGIC = 0x671B
MAGIC_WITH_DEFAULTS = 0x671C
HEADER = struct.Struct("<HHH")
MAX_NAME = 16

# AP_Param var types (not MAV_PARAM_TYPE): type -> (size, struct format)
AP_INT8, AP_INT16, AP_INT32, AP_FLOAT = 1, 2, 3, 4
AP_TYPES: dict[int, tuple[int, str]] = {AP_INT8: (1, "<b"), AP_INT16: (2, "<h"), AP_INT32: (4, "<i"),
                                        AP_FLOAT: (4, "<f")}
# MAV_PARAM_TYPE used in PARAM_VALUE for the same types
MAV_TYPE_OF_AP = {AP_INT8: ids.MAV_PARAM_TYPE_INT8, AP_INT16: ids.MAV_PARAM_TYPE_INT16,
                  AP_INT32: ids.MAV_PARAM_TYPE_INT32, AP_FLOAT: ids.MAV_PARAM_TYPE_REAL32}
AP_TYPE_OF_MAV = {v: k for k, v in MAV_TYPE_OF_AP.items()}


class ParamPackError(FlightSealError):
    """``param.pck`` bytes are not a valid packed parameter file."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"@PARAM/param.pck: {detail}")


@dataclass(frozen=True)
class PackedParam:
    name: str
    ap_type: int
    value: int | float
    default: int | float | None = None


@dataclass(frozen=True)
class ParamPack:
    params: tuple[PackedParam, ...]
    total_params: int
    with_defaults: bool

    def values(self) -> dict[str, int | float]:
        return {p.name: p.value for p in self.params}


def decode(data: bytes, max_params: int = 8192) -> ParamPack:
    """Decode a whole ``param.pck``; raise :class:`ParamPackError` on anything malformed."""
    if len(data) < HEADER.size:
        raise ParamPackError(f"only {len(data)} bytes, shorter than the 6-byte header")
    magic, num_params, total_params = HEADER.unpack_from(data)
    if magic not in (MAGIC, MAGIC_WITH_DEFAULTS):
        raise ParamPackError(f"bad magic 0x{magic:04x} (expected 0x{MAGIC:04x} or 0x{MAGIC_WITH_DEFAULTS:04x})")
    if num_params > total_params:
        raise ParamPackError(f"header says {num_params} parameters of {total_params} in total")
    if num_params > max_params:
        raise ParamPackError(f"{num_params} parameters is more than the limit of {max_params}")
    with_defaults = magic == MAGIC_WITH_DEFAULTS
    out: list[PackedParam] = []
    last = b""
    pos = HEADER.size
    end = len(data)
    while True:
        while pos < end and data[pos] == 0:
            pos += 1
        if pos >= end:
            break
        if len(out) >= num_params:
            raise ParamPackError(f"more records than the {num_params} the header announces")
        if pos + 2 > end:
            raise ParamPackError(f"record {len(out)} is truncated in its header")
        type_flags, lens = data[pos], data[pos + 1]
        ap_type, flags = type_flags & 0x0F, type_flags >> 4
        if ap_type not in AP_TYPES:
            raise ParamPackError(f"record {len(out)} has unknown type {ap_type}")
        size, fmt = AP_TYPES[ap_type]
        common, name_len = lens & 0x0F, (lens >> 4) + 1
        has_default = with_defaults and bool(flags & 1)
        record_end = pos + 2 + name_len + size * (2 if has_default else 1)
        if record_end > end:
            raise ParamPackError(f"record {len(out)} is truncated")
        if common > len(last):
            raise ParamPackError(f"record {len(out)} shares {common} characters with a {len(last)}-character name")
        raw_name = last[:common] + data[pos + 2:pos + 2 + name_len]
        if len(raw_name) > MAX_NAME or not all(0x20 < b < 0x7F for b in raw_name):
            raise ParamPackError(f"record {len(out)} has an invalid name {raw_name!r}")
        vpos = pos + 2 + name_len
        (value,) = struct.unpack_from(fmt, data, vpos)
        default = struct.unpack_from(fmt, data, vpos + size)[0] if has_default else None
        if ap_type == AP_FLOAT:
            value = float(value)
        out.append(PackedParam(raw_name.decode("ascii"), ap_type, value, default))
        last = raw_name
        pos = record_end
    if len(out) != num_params:
        raise ParamPackError(f"{len(out)} records, but the header announces {num_params}")
    return ParamPack(tuple(out), total_params, with_defaults)
