"""The TCG PC Client boot event log (crypto-agile format), parsed and replayed: bytes in, events out.

Firmware (UEFI, or U-Boot with ``CONFIG_MEASURED_BOOT``) records every digest it extends into a PCR
in this log; Linux exposes it as ``/sys/kernel/security/tpm0/binary_bios_measurements``. The log
itself is unsigned: only replaying it to the PCR values in a quote makes it evidence. Rules:

- the first event is a ``TCG_PCR_EVENT`` in the old SHA-1 layout, ``EV_NO_ACTION`` on PCR 0, whose
  data is the ``Spec ID Event03`` header naming each digest algorithm and its size (TCG PC Client
  Platform Firmware Profile, 10.4.5.1); every later event is a ``TCG_PCR_EVENT2`` with one digest
  per algorithm the header names, in any order, each at most once;
- the header must name SHA-256: it is the only bank FlightSeal quotes and replays;
- ``EV_NO_ACTION`` events are never extended; a ``StartupLocality`` one sets PCR 0's initial value;
- every size and count is bounded (:data:`MAX_EVENTS`, the whole log by ``LIMITS.max_boot_log_bytes``)
  and anything malformed, truncated or trailing raises :class:`~attest.errors.FormatError`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from attest.errors import FormatError
from attest.limits import LIMITS

TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
MAX_EVENTS = LIMITS.max_boot_log_events
MAX_ALGORITHMS = 8
MAX_DIGEST = 64
PCR_COUNT = 24
_W = "boot event log"

EV_PREBOOT_CERT = 0x0
EV_POST_CODE = 0x1
EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_ACTION = 0x5
EV_EVENT_TAG = 0x6
EV_S_CRTM_CONTENTS = 0x7
EV_S_CRTM_VERSION = 0x8
EV_CPU_MICROCODE = 0x9
EV_PLATFORM_CONFIG_FLAGS = 0xA
EV_TABLE_OF_DEVICES = 0xB
EV_COMPACT_HASH = 0xC
EV_IPL = 0xD
EV_IPL_PARTITION_DATA = 0xE
EV_NONHOST_CODE = 0xF
EV_NONHOST_CONFIG = 0x10
EV_NONHOST_INFO = 0x11
EV_OMIT_BOOT_DEVICE_EVENTS = 0x12
EV_POST_CODE2 = 0x13
EV_EFI_EVENT_BASE = 0x80000000
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_GPT_EVENT2 = 0x8000000D
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2

EVENT_TYPE_NAMES: Mapping[int, str] = {v: k for k, v in dict(globals()).items()
                                       if k.startswith("EV_") and isinstance(v, int) and k != "EV_EFI_EVENT_BASE"}


def type_name(event_type: int) -> str:
    return EVENT_TYPE_NAMES.get(event_type, f"0x{event_type:08x}")


@dataclass(frozen=True)
class SpecId:
    """The ``Spec ID Event03`` header: which digest algorithms each event carries, and their sizes."""

    platform_class: int
    version: tuple[int, int, int]  # major, minor, errata
    uintn_size: int
    algorithms: Mapping[int, int]  # TPM_ALG_ID -> digest size
    vendor_info: bytes = b""


@dataclass(frozen=True)
class Event:
    """One ``TCG_PCR_EVENT2``: the PCR, the event type, the SHA-256 digest extended, and the event data.

    ``digest`` is what replay authenticates; ``data`` is a description the firmware wrote beside it
    and is covered by nothing for most event types.
    """

    index: int  # position in the log, the header event being 0
    pcr: int
    type: int
    digest: bytes  # SHA-256
    data: bytes

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    @property
    def extends(self) -> bool:
        return self.type != EV_NO_ACTION


@dataclass(frozen=True)
class EventLog:
    spec: SpecId
    events: tuple[Event, ...]
    startup_locality: int = 0

    def replay(self, pcrs: Iterable[int] | None = None) -> dict[int, bytes]:
        """The SHA-256 value of each PCR the log extends (or of each of ``pcrs``), from its reset value."""
        wanted = set(self.pcrs() if pcrs is None else pcrs)
        values = {i: initial_value(i, self.startup_locality) for i in wanted}
        for e in self.events:
            if e.extends and e.pcr in values:
                values[e.pcr] = hashlib.sha256(values[e.pcr] + e.digest).digest()
        return values

    def pcrs(self) -> set[int]:
        """The PCRs this log extends."""
        return {e.pcr for e in self.events if e.extends}


def initial_value(pcr: int, locality: int = 0) -> bytes:
    """A SHA-256 PCR's value after TPM2_Startup(CLEAR) (PC Client PTP: PCR 0 carries the startup
    locality, PCRs 17-22 start at all ones)."""
    if pcr == 0:
        return bytes(31) + bytes([locality])
    return b"\xff" * 32 if 17 <= pcr <= 22 else bytes(32)


class _Reader:
    """Bounded little-endian reader: every read checks the bytes are there."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise FormatError(_W, f"truncated: {field} needs {n} bytes at offset {self.pos}, "
                              f"{len(self.data) - self.pos} left", field)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse(data: bytes) -> EventLog:
    """Parse a crypto-agile TCG event log; raise :class:`FormatError` for anything else."""
    if len(data) > LIMITS.max_boot_log_bytes:
        raise FormatError(_W, f"{len(data)} bytes is more than the {LIMITS.max_boot_log_bytes} allowed")
    r = _Reader(data)
    spec = _header(r)
    events: list[Event] = []
    locality = 0
    while r.left:
        if len(events) >= MAX_EVENTS:
            raise FormatError(_W, f"more than {MAX_EVENTS} events")
        event = _event2(r, spec, len(events) + 1)
        if event.type == EV_NO_ACTION and event.data.startswith(STARTUP_LOCALITY_SIGNATURE):
            if (event.pcr != 0 or len(event.data) != len(STARTUP_LOCALITY_SIGNATURE) + 1
                    or any(e.pcr == 0 and e.extends for e in events)):
                raise FormatError(_W, "a StartupLocality event must be on PCR 0, before its first measurement, "
                                  "with one byte", f"event {event.index}")
            locality = event.data[-1]
        events.append(event)
    return EventLog(spec, tuple(events), locality)


def _header(r: _Reader) -> SpecId:
    f = "event 0 (Spec ID)"
    pcr, kind = r.uint(4, f"{f}.pcrIndex"), r.uint(4, f"{f}.eventType")
    r.take(20, f"{f}.digest")
    size = r.uint(4, f"{f}.eventSize")
    if pcr != 0 or kind != EV_NO_ACTION:
        raise FormatError(_W, f"first event is {type_name(kind)} on PCR {pcr}, not the EV_NO_ACTION Spec ID "
                          "header on PCR 0 (a SHA-1-only log, or not an event log)", f)
    body = _Reader(r.take(size, f"{f}.event"))
    if body.take(16, f"{f}.signature") != SPEC_ID_SIGNATURE:
        raise FormatError(_W, "the header is not 'Spec ID Event03' (an old SHA-1-only log?)", f"{f}.signature")
    platform_class = body.uint(4, f"{f}.platformClass")
    minor, major, errata, uintn = (body.uint(1, f"{f}.{n}") for n in ("minor", "major", "errata", "uintnSize"))
    count = body.uint(4, f"{f}.numberOfAlgorithms")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise FormatError(_W, f"{count} digest algorithms; 1 to {MAX_ALGORITHMS} are allowed", f"{f}.algorithms")
    algorithms: dict[int, int] = {}
    for i in range(count):
        alg, digest_size = body.uint(2, f"{f}.algorithms[{i}]"), body.uint(2, f"{f}.algorithms[{i}].size")
        if alg in algorithms or not 1 <= digest_size <= MAX_DIGEST:
            raise FormatError(_W, f"algorithm 0x{alg:04x} listed twice or with digest size {digest_size}",
                              f"{f}.algorithms[{i}]")
        algorithms[alg] = digest_size
    if algorithms.get(TPM_ALG_SHA256) != 32:
        raise FormatError(_W, "the log has no SHA-256 digests (the only bank FlightSeal replays)", f"{f}.algorithms")
    vendor = body.take(body.uint(1, f"{f}.vendorInfoSize"), f"{f}.vendorInfo")
    if body.left:
        raise FormatError(_W, f"{body.left} unexpected bytes after the Spec ID header", f)
    return SpecId(platform_class, (major, minor, errata), uintn, algorithms, vendor)


def _event2(r: _Reader, spec: SpecId, index: int) -> Event:
    f = f"event {index}"
    pcr, kind = r.uint(4, f"{f}.pcrIndex"), r.uint(4, f"{f}.eventType")
    if pcr >= PCR_COUNT:
        raise FormatError(_W, f"PCR {pcr} does not exist (0 to {PCR_COUNT - 1})", f"{f}.pcrIndex")
    count = r.uint(4, f"{f}.digests.count")
    if count > len(spec.algorithms):
        raise FormatError(_W, f"{count} digests, but the header names {len(spec.algorithms)} algorithms",
                          f"{f}.digests.count")
    digests: dict[int, bytes] = {}
    for i in range(count):
        alg = r.uint(2, f"{f}.digests[{i}].hashAlg")
        size = spec.algorithms.get(alg)
        if size is None or alg in digests:
            raise FormatError(_W, f"digest algorithm 0x{alg:04x} is not in the header or is repeated",
                              f"{f}.digests[{i}]")
        digests[alg] = r.take(size, f"{f}.digests[{i}]")
    if TPM_ALG_SHA256 not in digests:
        raise FormatError(_W, "the event has no SHA-256 digest", f"{f}.digests")
    size = r.uint(4, f"{f}.eventSize")
    return Event(index, pcr, kind, digests[TPM_ALG_SHA256], r.take(size, f"{f}.event"))


def text(data: bytes) -> str:
    """Event data as text where firmware wrote text (EV_IPL strings, EV_EFI_ACTION), without the NUL."""
    return data.rstrip(b"\x00").decode("utf-8", "replace")


def mismatched(log: EventLog, quoted: Mapping[int, bytes], pcrs: Sequence[int]) -> list[int]:
    """Which of ``pcrs`` the quote reports with a value the log does not replay to."""
    replayed = log.replay(pcrs)
    return [i for i in pcrs if quoted.get(i) != replayed[i]]


def pack_event2(pcr: int, event_type: int, digests: Mapping[int, bytes], data: bytes) -> bytes:
    """One ``TCG_PCR_EVENT2`` in its binary form (for builders and tests; the parser is :func:`parse`)."""
    out = struct.pack("<III", pcr, event_type, len(digests))
    for alg, digest in digests.items():
        out += struct.pack("<H", alg) + digest
    return out + struct.pack("<I", len(data)) + data


def pack_header(algorithms: Mapping[int, int], vendor_info: bytes = b"", platform_class: int = 0) -> bytes:
    """The first event: ``TCG_PCR_EVENT`` (SHA-1 layout) carrying the ``Spec ID Event03`` header."""
    body = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", platform_class, 0, 2, 0, 2, len(algorithms))
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms.items())
    body += struct.pack("<B", len(vendor_info)) + vendor_info
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body
