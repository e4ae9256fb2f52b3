"""The FC's parameters: one digest over the whole set, and the values the manifest pins.

Fetched from ``@PARAM/param.pck`` over FTP when the FC serves it (one transfer, typed values),
else with the PARAM protocol (PARAM_REQUEST_LIST, then PARAM_REQUEST_READ for the indices that
did not arrive; bounded in rounds and time). The PARAM protocol carries every value in a float32
field, so values from either path are compared at float32 precision: the digest does not
depend on the path (``attest.params``). How an integer sits in that field depends on the FC:
ArduPilot casts it to a float (``c_cast_value``, the default), PX4 copies its bytes
(MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE; ``bytewise_value`` decodes by ``param_type`` from
the raw payload, so an INT32 keeps every bit, even one that reads as a signalling NaN).

Claims: ``exclude`` (the exclusion patterns the digest was computed with, comma-joined; the
appraisal refuses a digest made with other exclusions), ``count``, ``method``, and ``param.NAME``:
- with ``param_claims="all"`` (``flightseal measure``: an inventory to baseline and pin from),
  every parameter the FC has;
- otherwise every pinned name the FC has, and, when the approved values are known, every covered
  parameter that differs from them (``"absent"`` for one the FC lacks), at most
  ``LIMITS.max_named_param_differences`` of them, with ``differ`` = how many differ in all. The
  attestation stays small when nothing changed and names what did (ADR 0010).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from agent.mavlink.ftp import FtpClient, FtpError
from agent.mavlink.ids import MAV_PARAM_TYPE_INT8, MAV_PARAM_TYPE_INT16, MAV_PARAM_TYPE_INT32
from agent.mavlink.link import Link
from agent.measure.base import CollectError, Collector, Inventory, MeasureOptions, Pass
from agent.measure.parampck import ParamPackError, decode
from attest import params as paramdigest
from attest.limits import LIMITS
from attest.models import ClaimValue, Kind, Measurement, Strength

COMPONENT = "fc.params"
PCK_PATH = "@PARAM/param.pck"
NOTIFICATION_INDEX = 0xFFFF
MAX_PARAMS = LIMITS.max_params


def as_float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", float(value)))[0])


def _claim_value(value: float) -> ClaimValue:
    if isinstance(value, int):  # a typed integer (PX4's bytewise INT32); int.is_integer is Python 3.12+
        return int(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


ValueDecoder = Callable[[Any], float]  # one PARAM_VALUE → its value

# param_type → struct format of the integer types a bytewise FC puts in the value field. PX4's
# parameters are INT32 or REAL32 only (its _HASH_CHECK is a UINT32, but it is not a parameter).
_BYTEWISE_INTS: dict[int, str] = {MAV_PARAM_TYPE_INT8: "<b", MAV_PARAM_TYPE_INT16: "<h", MAV_PARAM_TYPE_INT32: "<i"}


def c_cast_value(msg: Any) -> float:
    """ArduPilot's encoding: every value, integer or not, is the float32 the field holds."""
    return as_float32(msg.param_value)


def _raw_value_bytes(msg: Any) -> bytes:
    """The 4 bytes of ``param_value`` as sent. Read from the received frame, because pymavlink
    hands the field over as a Python float, and turning a float32 signalling NaN into a double
    quiets it (0x7F800001 comes back as 0x7FC00001: measured on x86-64), so an INT32 read back
    from the float can lose a bit. A message built locally (no frame) falls back to the float."""
    buf = bytes(msg.get_msgbuf() or b"") if hasattr(msg, "get_msgbuf") else b""
    header = {0xFD: 10, 0xFE: 6}.get(buf[0]) if buf else None
    if header is not None and len(buf) >= header + 4:
        return buf[header:header + 4]  # param_value is the first field on the wire (largest first)
    return struct.pack("<f", float(msg.param_value))


def bytewise_value(msg: Any) -> float:
    """PX4's encoding (MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE): an integer parameter's bytes
    are copied into the float field, so decode by ``param_type``; a REAL32 is the float32 itself."""
    fmt = _BYTEWISE_INTS.get(int(msg.param_type))
    if fmt is None:
        return as_float32(msg.param_value)
    raw = _raw_value_bytes(msg)
    return int(struct.unpack_from(fmt, raw)[0])


def from_param_pck(ftp: FtpClient, opts: MeasureOptions, attempts: int = 2) -> dict[str, float]:
    """Read and decode ``param.pck``; a file that does not add up is read once more (the parameter
    count can still change while the FC starts scripting)."""
    for _ in range(attempts - 1):
        try:
            return {p.name: as_float32(p.value) for p in decode(ftp.read_file(PCK_PATH, opts.max_param_bytes),
                                                               MAX_PARAMS).params}
        except ParamPackError:
            ftp.link.recv(["NONE"], 0.5)
    return {p.name: as_float32(p.value) for p in decode(ftp.read_file(PCK_PATH, opts.max_param_bytes),
                                                       MAX_PARAMS).params}


def from_param_protocol(link: Link, opts: MeasureOptions, decode: ValueDecoder = c_cast_value) -> dict[str, float]:
    """PARAM_REQUEST_LIST, then re-request missing indices; bounded by ``param_timeout``.
    ``decode`` turns one PARAM_VALUE into its value (the FC's encoding: ArduPilot's c-cast by default)."""
    deadline = time.monotonic() + opts.param_timeout
    by_index: dict[int, tuple[str, float]] = {}
    updates: dict[str, float] = {}
    count: int | None = None
    tsys, tcomp = link.fc

    def from_fc(m: Any) -> bool:
        return (m.get_srcSystem(), m.get_srcComponent()) == link.fc

    link.send(link.mav.param_request_list_encode(tsys, tcomp))
    last_progress = time.monotonic()
    rounds = 0
    while count is None or len(by_index) < count:
        now = time.monotonic()
        if now >= deadline:
            got = len(by_index)
            raise CollectError(f"PARAM protocol: {got} of {count if count is not None else '?'} parameters within "
                               f"{opts.param_timeout:.0f} s")
        msg = link.recv(["PARAM_VALUE"], min(0.3, deadline - now), from_fc)
        if msg is not None:
            name = msg.param_id
            if msg.param_index == NOTIFICATION_INDEX:
                updates[name] = decode(msg)
                continue
            if count is not None and int(msg.param_count) != count:
                by_index.clear()  # the FC's parameter set changed under us (still starting): begin again
                count = None
                link.send(link.mav.param_request_list_encode(tsys, tcomp))
            if count is None:
                count = int(msg.param_count)
                if count > MAX_PARAMS:
                    raise CollectError(f"the FC announces {count} parameters, more than the limit of {MAX_PARAMS}")
            if 0 <= msg.param_index < count and msg.param_index not in by_index:
                by_index[msg.param_index] = (name, decode(msg))
                last_progress = time.monotonic()
            continue
        if time.monotonic() - last_progress < 1.0:
            continue
        rounds += 1
        last_progress = time.monotonic()
        if count is None:
            link.send(link.mav.param_request_list_encode(tsys, tcomp))
            continue
        for index in [i for i in range(count) if i not in by_index][:64]:
            link.send(link.mav.param_request_read_encode(tsys, tcomp, b"", index))
    values = dict(by_index.values())
    for name, value in updates.items():
        if name in values:
            values[name] = value  # a change notified while the list was streaming is the newer value
    return values


def collect_params(link: Link, ftp: FtpClient | None, opts: MeasureOptions, inv: Inventory) -> Measurement | None:
    values: dict[str, float] | None = None
    source = ""
    notes: list[str] = []
    if opts.param_source in ("auto", "ftp") and ftp is not None:
        try:
            values = from_param_pck(ftp, opts)
            source = f"mavlink-ftp:{PCK_PATH}"
        except (FtpError, ParamPackError) as exc:
            notes.append(str(exc))
            if opts.param_source == "ftp":
                inv.missing(COMPONENT, str(exc))
                return None
    if values is None:
        try:
            values = from_param_protocol(link, opts)
            source = "mavlink:PARAM_VALUE"
        except CollectError as exc:
            inv.missing(COMPONENT, "; ".join([*notes, str(exc)]))
            return None
    return params_measurement(values, source, "param.pck" if source.startswith("mavlink-ftp") else "param-protocol",
                              opts, inv)


def params_measurement(values: dict[str, float], source: str, method: str, opts: MeasureOptions,
                       inv: Inventory) -> Measurement:
    """The ``fc.params`` measurement of ``values`` (also kept in ``inv.fc_params`` for later collectors):
    shared by every FC profile, so a digest and its claims mean the same whatever the FC."""
    inv.fc_params = values
    exclusions = tuple(opts.param_exclusions)
    claims: dict[str, ClaimValue] = {"exclude": ",".join(exclusions), "count": len(values), "method": method}
    claims.update(param_value_claims(values, opts))
    digest = paramdigest.digest(values, exclusions)
    return Measurement(COMPONENT, Kind.PARAMS, {"sha256": digest}, source, Strength.SELF_REPORTED, claims)


def param_value_claims(values: dict[str, float], opts: MeasureOptions) -> dict[str, ClaimValue]:
    """The ``param.NAME`` claims (and ``differ``) for ``opts.param_claims``; see the module docstring."""
    if opts.param_claims == "all":
        return {f"param.{name}": _claim_value(value) for name, value in sorted(values.items())}
    claims: dict[str, ClaimValue] = {f"param.{n}": _claim_value(values[n]) for n in opts.pinned_params if n in values}
    if opts.param_baseline is not None:
        changed = paramdigest.differences(opts.param_baseline, values, opts.param_exclusions)
        claims["differ"] = len(changed)
        for name, value in list(changed.items())[:LIMITS.max_named_param_differences]:
            claims[f"param.{name}"] = paramdigest.ABSENT if value is None else _claim_value(value)
    return claims


def _step(p: Pass) -> list[Measurement]:
    m = collect_params(p.link, p.ftp, p.opts, p.inv)
    return [] if m is None else [m]


COLLECTOR = Collector("params", COMPONENT, _step)
