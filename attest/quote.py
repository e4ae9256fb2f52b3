"""TPM 2.0 quotes, checked offline: the TPMS_ATTEST bytes are parsed here, not by a TPM library.

A quote is the TPM's own signed statement of its PCR values, its clock and the caller's
qualifying data. The verifier holds only bytes, so this module parses ``TPMS_ATTEST`` itself
(TPM 2.0 Part 2, 10.12) with a bound on every size, and raises nothing but
:class:`~attest.errors.FormatError` on garbage. :func:`check_quote` then checks, and reports
every failure as a :class:`~attest.models.Reason` with its own code:

- the signature is by the enrolled device key, a *restricted* TPM key, which the TPM lets sign
  only structures it made itself (``quote-signature``);
- magic ``TPM_GENERATED_VALUE`` and type ``ATTEST_QUOTE`` (``quote-invalid``);
- ``extraData`` is the statement digest, which binds the operator's nonce and every measurement
  (``quote-qualifying-data``);
- the TPM clock is ``safe`` and reset/restart counters and clock do not go back from values the
  caller last saw for this device (``quote-clock-unsafe``, ``quote-counter-rollback``);
- the signed PCR selection is exactly the reported PCRs, in the SHA-256 bank, and includes the
  agent PCR, one the OS cannot reset (8-15; ``quote-pcr-selection``); the signed PCR digest is the
  SHA-256 of the reported values (``quote-pcr-digest``);
- replaying the agent's event log (its start-ups since the TPM was reset) gives the agent PCR
  (``quote-event-log``: a lost or edited log, or another process extending the PCR), and every
  agent start-up since boot was the build this statement attests (``agent-pcr-history``).

The measurements themselves are bound by ``extraData`` (the statement digest); format v1 also
extended them into the resettable PCR 23, which any local process could reset (issue 12), and is
refused. ADR 0020 has the why.

The JSON form carried in the predicate is :class:`Quote`; ``hardware/tpm.py`` produces it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attest import jsonio
from attest.enrollment import DeviceRecord
from attest.errors import FormatError
from attest.evidence import Predicate, statement_digest
from attest.keys import KeyKind, PublicKey
from attest.limits import LIMITS
from attest.models import Code, Measurement, Reason

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B
QUOTE_FORMAT = "flightseal/tpm2-quote/v2"
PCR_COUNT = 24
AGENT_PCR = 13  # default: not resettable at locality 0, unused by boot stacks on companions (ADR 0020)
AGENT_PCRS = range(8, 16)  # PCRs the OS can extend but never reset (PC Client: 0-7 belong to firmware)
AGENT_START = "agent-start"  # the one kind of agent event: the agent's files and config, at start-up
_MAX_NAME = 2 + 64  # TPMU_NAME: algorithm id + largest digest
_MAX_DATA = 64  # TPM2B_DATA holds at most sizeof(TPMT_HA)
_MAX_DIGEST = 64
_MAX_SELECTIONS = 16  # HASH_COUNT
_MAX_SELECT_BYTES = 4  # PCR_SELECT_MAX for up to 32 PCRs
_MAX_SIG_DER = 72
_W = "TPM quote"
_COMPONENT = "tpm-quote"


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO: milliseconds the TPM has run, boot and resume counters, and whether clock is safe."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool

    def went_back_from(self, last: ClockInfo) -> str | None:
        """Why this clock is older than ``last`` (a replayed quote or a rolled-back TPM), or None.

        Reset/restart counters only grow until TPM2_Clear; a *safe* clock is never below a value
        the TPM reported before (Part 2, TPMS_CLOCK_INFO), across reboots too.
        """
        if (self.reset_count, self.restart_count) < (last.reset_count, last.restart_count):
            return (f"reset/restart counters {self.reset_count}/{self.restart_count} are below the last seen "
                    f"{last.reset_count}/{last.restart_count}")
        if self.clock < last.clock:
            return f"TPM clock {self.clock} ms is below the last seen {last.clock} ms"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"clock": self.clock, "reset_count": self.reset_count, "restart_count": self.restart_count,
                "safe": self.safe}

    @classmethod
    def from_json(cls, data: Any, what: str = "TPM clock") -> ClockInfo:
        o = jsonio.expect_object(data, what, {"clock", "reset_count", "restart_count", "safe"})
        return cls(jsonio.expect_int(o["clock"], what, "clock", 0, 2**64 - 1),
                   jsonio.expect_int(o["reset_count"], what, "reset_count", 0, 2**32 - 1),
                   jsonio.expect_int(o["restart_count"], what, "restart_count", 0, 2**32 - 1),
                   jsonio.expect_bool(o["safe"], what, "safe"))


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a hash bank and the PCR indices selected in it (ascending)."""

    hash_alg: int
    pcrs: tuple[int, ...]
    size_of_select: int = 3

    def to_bytes(self) -> bytes:
        bitmap = bytearray(self.size_of_select)
        for i in self.pcrs:
            bitmap[i // 8] |= 1 << (i % 8)
        return struct.pack(">HB", self.hash_alg, self.size_of_select) + bytes(bitmap)


@dataclass(frozen=True)
class Attest:
    """A TPMS_ATTEST whose ``attested`` member is a TPMS_QUOTE_INFO."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: ClockInfo
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes

    def to_bytes(self) -> bytes:
        """Marshal as the TPM does (big-endian, TPM2B size prefixes); ``parse_attest`` inverts it."""
        out = struct.pack(">IH", self.magic, self.type)
        out += _tpm2b(self.qualified_signer) + _tpm2b(self.extra_data)
        c = self.clock
        out += struct.pack(">QIIBQ", c.clock, c.reset_count, c.restart_count, int(c.safe), self.firmware_version)
        out += struct.pack(">I", len(self.pcr_select)) + b"".join(s.to_bytes() for s in self.pcr_select)
        return out + _tpm2b(self.pcr_digest)


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


class _Reader:
    """Bounded big-endian reader: every read checks the bytes are there."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError("TPMS_ATTEST", f"truncated: {field} needs {n} bytes at offset {self.pos}", field)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def tpm2b(self, limit: int, field: str) -> bytes:
        size = self.uint(2, field)
        if size > limit:
            raise FormatError("TPMS_ATTEST", f"{size} bytes is more than the {limit} allowed", field)
        return self.take(size, field)


def parse_attest(data: bytes) -> Attest:
    """Parse TPMS_ATTEST bytes of a quote; raise :class:`FormatError` for anything else."""
    if len(data) > LIMITS.max_quote_bytes:
        raise FormatError("TPMS_ATTEST", f"{len(data)} bytes is more than the {LIMITS.max_quote_bytes} allowed")
    r = _Reader(data)
    magic = r.uint(4, "magic")
    if magic != TPM_GENERATED_VALUE:
        raise FormatError("TPMS_ATTEST", f"magic 0x{magic:08x} is not TPM_GENERATED_VALUE (not made by a TPM)",
                          "magic")
    kind = r.uint(2, "type")
    if kind != TPM_ST_ATTEST_QUOTE:
        raise FormatError("TPMS_ATTEST", f"type 0x{kind:04x} is not TPM_ST_ATTEST_QUOTE (0x8018)", "type")
    signer = r.tpm2b(_MAX_NAME, "qualifiedSigner")
    extra = r.tpm2b(_MAX_DATA, "extraData")
    clock = ClockInfo(r.uint(8, "clockInfo.clock"), r.uint(4, "clockInfo.resetCount"),
                      r.uint(4, "clockInfo.restartCount"), False)
    safe = r.uint(1, "clockInfo.safe")
    if safe > 1:
        raise FormatError("TPMS_ATTEST", f"safe is {safe}, not YES (1) or NO (0)", "clockInfo.safe")
    clock = ClockInfo(clock.clock, clock.reset_count, clock.restart_count, bool(safe))
    firmware = r.uint(8, "firmwareVersion")
    count = r.uint(4, "pcrSelect.count")
    if count > _MAX_SELECTIONS:
        raise FormatError("TPMS_ATTEST", f"{count} PCR banks is more than {_MAX_SELECTIONS}", "pcrSelect.count")
    selections = []
    for i in range(count):
        alg = r.uint(2, f"pcrSelect[{i}].hash")
        size = r.uint(1, f"pcrSelect[{i}].sizeofSelect")
        if size > _MAX_SELECT_BYTES:
            raise FormatError("TPMS_ATTEST", f"sizeofSelect {size} is more than {_MAX_SELECT_BYTES}",
                              f"pcrSelect[{i}].sizeofSelect")
        bitmap = r.take(size, f"pcrSelect[{i}].pcrSelect")
        pcrs = tuple(8 * b + bit for b in range(size) for bit in range(8) if bitmap[b] >> bit & 1)
        selections.append(PcrSelection(alg, pcrs, size))
    digest = r.tpm2b(_MAX_DIGEST, "pcrDigest")
    if r.pos != len(data):
        raise FormatError("TPMS_ATTEST", f"{len(data) - r.pos} unexpected bytes after the quote")
    return Attest(magic, kind, signer, extra, clock, firmware, tuple(selections), digest)


@dataclass(frozen=True)
class AgentEvent:
    """One event the agent extended into its PCR: a kind and the digest of what it measured."""

    kind: str
    digest: bytes  # SHA-256

    @property
    def value(self) -> bytes:
        """What was extended: kind and digest together, so an event cannot pass for another kind."""
        return hashlib.sha256(b"flightseal/" + self.kind.encode() + b"\0" + self.digest).digest()

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "digest": self.digest.hex()}

    @classmethod
    def from_json(cls, data: Any, field: str) -> AgentEvent:
        o = jsonio.expect_object(data, _W, {"kind", "digest"})
        kind = jsonio.expect_str(o["kind"], _W, f"{field}.kind", 32)
        if kind != AGENT_START:
            raise FormatError(_W, f"unknown agent event kind {kind!r}", f"{field}.kind")
        return cls(kind, _hex(o["digest"], f"{field}.digest", 32, exact=True))


@dataclass(frozen=True)
class Quote:
    """A quote as carried in the predicate: signed bytes, signature, PCR values and the event logs."""

    attest: bytes
    signature: bytes  # DER ECDSA-SHA256 over ``attest``
    pcrs: Mapping[int, bytes]  # SHA-256 bank
    agent_log: tuple[AgentEvent, ...] = ()  # extended into ``agent_pcr`` since the TPM was reset, in order
    agent_pcr: int = AGENT_PCR
    boot_log: bytes = b""  # the companion's TCG PC Client boot event log, as firmware left it ("" if none)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": QUOTE_FORMAT,
            "attest": self.attest.hex(),
            "signature": self.signature.hex(),
            "pcr_bank": "sha256",
            "pcrs": {str(i): v.hex() for i, v in sorted(self.pcrs.items())},
            "agent_pcr": self.agent_pcr,
            "agent_log": [e.to_json() for e in self.agent_log],
        }
        if self.boot_log:
            out["boot_event_log"] = base64.b64encode(self.boot_log).decode()
        return out

    @classmethod
    def from_json(cls, data: Any) -> Quote:
        if isinstance(data, dict) and data.get("format") == "flightseal/tpm2-quote/v1":
            raise FormatError(_W, "format v1 put the measurements in PCR 23, which any local process can reset; "
                              "update the agent (quote format v2, ADR 0020)", "format")
        o = jsonio.expect_object(data, _W, {"format", "attest", "signature", "pcr_bank", "pcrs", "agent_pcr",
                                            "agent_log"}, {"boot_event_log"})
        if o["format"] != QUOTE_FORMAT:
            raise FormatError(_W, f"format {o['format']!r} is not {QUOTE_FORMAT!r}", "format")
        if o["pcr_bank"] != "sha256":
            raise FormatError(_W, f"PCR bank {o['pcr_bank']!r} is not sha256", "pcr_bank")
        attest = _hex(o["attest"], "attest", LIMITS.max_quote_bytes)
        signature = _hex(o["signature"], "signature", _MAX_SIG_DER)
        pcr_map = jsonio.expect_str_map(o["pcrs"], _W, "pcrs", PCR_COUNT)
        pcrs: dict[int, bytes] = {}
        for key, value in pcr_map.items():
            if not key.isdigit() or not 0 <= int(key) < PCR_COUNT or str(int(key)) != key:
                raise FormatError(_W, f"PCR index {key!r} is not 0 to {PCR_COUNT - 1}", "pcrs")
            pcrs[int(key)] = _hex(value, f"pcrs.{key}", 32, exact=True)
        log = jsonio.expect_list(o["agent_log"], _W, "agent_log", LIMITS.max_event_log_entries)
        return cls(
            attest=attest,
            signature=signature,
            pcrs=pcrs,
            agent_log=tuple(AgentEvent.from_json(e, f"agent_log[{i}]") for i, e in enumerate(log)),
            agent_pcr=jsonio.expect_int(o["agent_pcr"], _W, "agent_pcr", 0, PCR_COUNT - 1),
            boot_log=_b64(o.get("boot_event_log", ""), "boot_event_log", LIMITS.max_boot_log_bytes),
        )


def _b64(value: Any, field: str, max_bytes: int) -> bytes:
    text = jsonio.expect_str(value, _W, field, 4 * (max_bytes // 3 + 1))
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise FormatError(_W, "must be base64", field) from None


def _hex(value: Any, field: str, max_bytes: int, exact: bool = False) -> bytes:
    text = jsonio.expect_str(value, _W, field, 2 * max_bytes)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise FormatError(_W, "must be hex", field) from None
    if exact and len(raw) != max_bytes:
        raise FormatError(_W, f"must be {max_bytes} bytes, got {len(raw)}", field)
    return raw


def replay(events: Sequence[bytes]) -> bytes:
    """The SHA-256 PCR value after extending ``events`` (extend values) into a PCR that starts at zero."""
    pcr = bytes(32)
    for e in events:
        pcr = hashlib.sha256(pcr + e).digest()
    return pcr


def pcr_digest(selection: Sequence[PcrSelection], values: Mapping[int, bytes]) -> bytes:
    """TPM2_Quote's pcrDigest: SHA-256 over the selected values, bank by bank, PCR index ascending."""
    return hashlib.sha256(b"".join(values.get(i, b"") for s in selection for i in s.pcrs)).digest()


def check_quote(
    quote_json: Any,
    *,
    key: PublicKey,
    qualifying: bytes,
    measurements: Sequence[Measurement],
    last_clock: ClockInfo | None = None,
) -> list[Reason]:
    """Every reason ``quote_json`` is not a fresh quote by ``key`` over these measurements; empty if it is."""
    try:
        quote = Quote.from_json(quote_json)
        attest = parse_attest(quote.attest)
    except FormatError as exc:
        return [Reason(Code.QUOTE_INVALID, str(exc), _COMPONENT)]
    out: list[Reason] = []
    if not key.verify(quote.signature, quote.attest):
        out.append(Reason(Code.QUOTE_SIGNATURE, "quote is not signed by the enrolled device key "
                          "(forged, altered, or from another TPM)", _COMPONENT))
    if not hmac.compare_digest(attest.extra_data, qualifying):
        out.append(Reason(Code.QUOTE_QUALIFYING_DATA, "quote was made for another statement or nonce "
                          "(extraData is not this statement's digest)", _COMPONENT))
    if not attest.clock.safe:
        out.append(Reason(Code.QUOTE_CLOCK_UNSAFE, "TPM clock is not safe (it may have gone back after an "
                          "unorderly shutdown)", _COMPONENT))
    if last_clock is not None:
        why = attest.clock.went_back_from(last_clock)
        if why:
            out.append(Reason(Code.QUOTE_COUNTER_ROLLBACK, f"{why}: an old quote replayed, or the TPM was "
                              "rolled back", _COMPONENT))
    out += _pcrs(quote, attest)
    out += _agent_log(quote, measurements)
    return out


def check_predicate_quote(predicate: Predicate, device: DeviceRecord,
                          last_clock: ClockInfo | None = None) -> list[Reason]:
    """Check the quote an attestation carries against its own statement and the enrolled key.

    The qualifying data must be the statement digest (the statement without its quote), so a
    quote lifted from another attestation, or made for another nonce, does not fit. A quote
    "signed" by a PKCS#11 or software key proves nothing (such a key signs anything), so it is
    refused whatever it says.
    """
    if predicate.quote is None:
        return [Reason(Code.QUOTE_MISSING, "attestation carries no TPM quote", _COMPONENT)]
    if device.key_kind is not KeyKind.TPM:
        return [Reason(Code.QUOTE_INVALID, f"quote signed by a {device.key_kind.value} key: only a restricted TPM "
                       "key can vouch that a TPM made it", _COMPONENT)]
    return check_quote(predicate.quote, key=device.key, qualifying=statement_digest(predicate),
                       measurements=predicate.measurements, last_clock=last_clock)


def _pcrs(quote: Quote, attest: Attest) -> list[Reason]:
    banks = [s for s in attest.pcr_select if s.pcrs]
    if len(banks) != 1 or banks[0].hash_alg != TPM_ALG_SHA256:
        algs = ", ".join(f"0x{s.hash_alg:04x}" for s in banks) or "none"
        return [Reason(Code.QUOTE_PCR_SELECTION, f"quote must cover one SHA-256 PCR bank, it covers {algs}",
                       _COMPONENT)]
    signed = set(banks[0].pcrs)
    out = []
    if signed != set(quote.pcrs):
        out.append(Reason(Code.QUOTE_PCR_SELECTION, f"signed PCR selection {sorted(signed)} differs from the "
                          f"reported PCRs {sorted(quote.pcrs)}", _COMPONENT))
    if quote.agent_pcr not in AGENT_PCRS:
        out.append(Reason(Code.QUOTE_PCR_SELECTION, f"agent PCR {quote.agent_pcr} is not one of 8-15, which the OS "
                          "can extend but never reset", _COMPONENT))
    elif quote.agent_pcr not in signed:
        out.append(Reason(Code.QUOTE_PCR_SELECTION, f"agent PCR {quote.agent_pcr} is not in the quote", _COMPONENT))
    if not out and not hmac.compare_digest(pcr_digest(banks, quote.pcrs), attest.pcr_digest):
        out.append(Reason(Code.QUOTE_PCR_DIGEST, "reported PCR values do not hash to the signed PCR digest",
                          _COMPONENT))
    return out


def _agent_log(quote: Quote, measurements: Sequence[Measurement]) -> list[Reason]:
    """The agent's start-ups since the TPM was reset: they must replay to the agent PCR, and each must be
    the agent build this statement attests (``companion.agent``)."""
    out = []
    value = quote.pcrs.get(quote.agent_pcr)
    if value is not None and not hmac.compare_digest(replay([e.value for e in quote.agent_log]), value):
        out.append(Reason(Code.QUOTE_EVENT_LOG, f"replaying {len(quote.agent_log)} agent event(s) does not give PCR "
                          f"{quote.agent_pcr}: the log was lost or edited, or another process extended the PCR",
                          _COMPONENT))
    agent = next((m.digests.get("sha256") for m in measurements if m.component == "companion.agent"), None)
    for e in quote.agent_log:
        if agent is None:
            out.append(Reason(Code.AGENT_PCR_HISTORY, "the agent PCR records start-ups but the statement has no "
                              "companion.agent measurement to compare them with", _COMPONENT))
            break
        if e.digest.hex() != agent:
            out.append(Reason(Code.AGENT_PCR_HISTORY, f"an agent build {e.digest.hex()[:16]}… started since the "
                              f"companion booted, not the one attested ({agent[:16]}…): reboot after an update",
                              _COMPONENT))
            break
    return out


def observed_clock(quote_json: Any) -> ClockInfo:
    """The clock and counters of a quote, for a verifier to remember after it passed."""
    return parse_attest(Quote.from_json(quote_json).attest).clock
