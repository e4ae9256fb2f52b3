"""How a PARAM_VALUE carries a parameter's value, by the FC's encoding.

MAVLink's ``param_value`` is a float32. ArduPilot casts integers to float (C cast: exact up to
2**24); PX4 copies an INT32's bits into the float (MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE),
so 1 arrives as 1.4e-45. Read as a float, a PX4 integer would be a denormal that compares, and
digests, wrongly; decoded by the parameter's type it is the integer PX4 holds.
"""

from __future__ import annotations

import struct

from pymavlink.dialects.v20 import ardupilotmega as _mav

_INT_FORMATS = {
    _mav.MAV_PARAM_TYPE_UINT8: "<B", _mav.MAV_PARAM_TYPE_INT8: "<b",
    _mav.MAV_PARAM_TYPE_UINT16: "<H", _mav.MAV_PARAM_TYPE_INT16: "<h",
    _mav.MAV_PARAM_TYPE_UINT32: "<I", _mav.MAV_PARAM_TYPE_INT32: "<i",
}


def decode_bytewise(value: float, param_type: int) -> float:
    """The value of a bytewise-encoded PARAM_VALUE (PX4): an integer type's bits out of the float."""
    fmt = _INT_FORMATS.get(param_type)
    if fmt is None:
        return float(value)
    raw = struct.pack("<f", value)
    return float(struct.unpack(fmt, raw[:struct.calcsize(fmt)])[0])


def encode_bytewise(value: float, param_type: int) -> float:
    """The float a bytewise FC (PX4) puts in PARAM_VALUE/PARAM_SET for ``value`` of ``param_type``."""
    fmt = _INT_FORMATS.get(param_type)
    if fmt is None:
        return float(value)
    raw = struct.pack(fmt, int(value)).ljust(4, b"\0")
    return float(struct.unpack("<f", raw)[0])
