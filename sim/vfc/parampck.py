"""Encoder for ``@PARAM/param.pck``, as ArduPilot's ``AP_Filesystem_Param`` produces it.

The virtual FC must produce the same bytes SITL does for the same parameters and the same FTP
read size: the padding rule (a multi-byte value never straddles a read boundary) makes the
bytes depend on the first read size of the open file. The known-answer test reproduces the
captured SITL file byte for byte with the read size pymavlink used (80).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from agent.measure.parampck import AP_TYPES, HEADER, MAGIC, MAGIC_WITH_DEFAULTS, MAX_NAME


def pack_value(ap_type: int, value: float) -> bytes:
    fmt = AP_TYPES[ap_type][1]
    return struct.pack(fmt, value if fmt == "<f" else int(value))


def encode(params: Sequence[tuple[str, int, float]], read_size: int, *, total: int | None = None,
           announce: int | None = None, defaults: dict[str, float] | None = None) -> bytes:
    """Pack ``(name, ap_type, value)`` records in order, padded for ``read_size``-byte reads.

    ``defaults`` switches to the ``withdefaults=1`` form: a record carries its default when it
    differs from the value. ``announce`` puts another count in the header than there are records
    (ArduPilot's cached count while parameters still appear at boot).
    """
    if read_size <= 0:
        raise ValueError("read size must be positive")
    num = len(params) if announce is None else announce
    out = bytearray(HEADER.pack(MAGIC_WITH_DEFAULTS if defaults is not None else MAGIC, num,
                                num if total is None else total))
    last = ""
    for name, ap_type, value in params:
        if not 1 <= len(name) <= MAX_NAME:
            raise ValueError(f"parameter name {name!r} must be 1 to {MAX_NAME} characters")
        common = 0
        while common < min(len(name), len(last)) and name[common] == last[common]:
            common += 1
        common = min(common, 15)
        suffix = name[common:]
        if not suffix:
            common -= 1
            suffix = name[common:]
        size = AP_TYPES[ap_type][0]
        default = None if defaults is None else defaults.get(name)
        add_default = default is not None and pack_value(ap_type, default) != pack_value(ap_type, value)
        record = bytearray([ap_type | (0x10 if add_default else 0), common | ((len(suffix) - 1) << 4)])
        record += suffix.encode("ascii") + pack_value(ap_type, value)
        if add_default and default is not None:
            record += pack_value(ap_type, default)
        if size > 1:
            end_mod = (len(out) + len(record)) % read_size
            if 0 < end_mod < size:
                out += bytes(size - end_mod)
        out += record
        last = name
    return bytes(out)
