"""Verification of incoming attestations: the same core as ``flightseal verify``, fed from a cached
trust directory and the per-device memory the service keeps in its database.

Why a cache: parsing the root, every enrolment and the manifest costs far more than verifying one
attestation, and they change rarely. :class:`TrustCache` re-reads them only when a file's
modification time or size changed (checked at most every ``trust_recheck_s``). The service never
writes to the trust directory (it is the operators' pinned trust); the manifest high-water and the
TPM clocks it learns are kept per device in the database and handed to the core from there.

The nonce: the core compares the predicate's nonce with the one the verifier expected. The service
decides which nonce that is only after parsing (an issued one, or the agent's own, see
:mod:`fleet.nonces`), so it verifies with a placeholder and drops the core's nonce-mismatch
reason; :mod:`fleet.store` then makes the nonce decision itself, in the ingest transaction.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from attest import dsse
from attest.enrollment import DeviceRecord
from attest.errors import FlightSealError, FormatError
from attest.limits import LIMITS
from attest.manifest import Manifest
from attest.models import Code, Reason
from attest.quote import ClockInfo
from attest.trust import TrustedState
from attest.verify import VerificationResult, VerifierPolicy, verify_attestation
from fleet.config import FleetConfig
from hardware.quote_check import default_quote_checker
from truststore.trustdir import TrustDir

_PLACEHOLDER_NONCE = b""


class FleetCode(enum.StrEnum):
    """Reasons only the service can give (the core's are :class:`attest.models.Code`)."""

    DEVICE_REVOKED = "device-revoked"
    NONCE_REPLAYED = "nonce-replayed"


@dataclass(frozen=True)
class FleetReason:
    """A reason as stored: the core's code or a :class:`FleetCode`, as its stable string."""

    code: str
    detail: str
    component: str = ""

    @classmethod
    def from_core(cls, r: Reason) -> FleetReason:
        return cls(r.code.value, r.detail, r.component)

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "component": self.component, "detail": self.detail}

    @classmethod
    def from_json(cls, d: dict[str, str]) -> FleetReason:
        return cls(d["code"], d["detail"], d.get("component", ""))

    def __str__(self) -> str:
        where = f" [{self.component}]" if self.component else ""
        return f"{self.code}{where}: {self.detail}"


def reasons_json(reasons: list[FleetReason]) -> str:
    return json.dumps([r.to_json() for r in reasons])


def reasons_from_json(text: str) -> list[FleetReason]:
    return [FleetReason.from_json(d) for d in json.loads(text)]


class TrustUnavailableError(FlightSealError):
    """The trust directory cannot be read, so nothing can be verified (and nothing is stored)."""


@dataclass(frozen=True)
class TrustSnapshot:
    """Everything ``flightseal verify`` reads from a trust directory, parsed once."""

    state: TrustedState
    devices: tuple[DeviceRecord, ...]
    manifest_bytes: bytes
    manifest: Manifest
    highest: int
    highest_digest: str | None
    clocks: dict[str, ClockInfo]
    tpm_cas: tuple[x509.Certificate, ...]
    by_keyid: dict[str, DeviceRecord] = field(default_factory=dict)
    by_id: dict[str, DeviceRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> TrustSnapshot:
        td = TrustDir(path)
        try:
            state = td.trusted_state()
            devices = tuple(td.devices(state))
            manifest_bytes = td.manifest_bytes()
            env = dsse.Envelope.from_bytes(manifest_bytes, f"manifest {td.manifest_path}", LIMITS.max_manifest_bytes)
            manifest = Manifest.from_json(env.payload_json("manifest", LIMITS.max_manifest_bytes))
            highest, digest = td.highest_manifest()
            clocks, cas = td.device_clocks(), tuple(td.tpm_cas())
        except (FlightSealError, OSError) as exc:
            raise TrustUnavailableError(f"trust directory {path} is unusable: {exc}") from None
        return cls(state, devices, manifest_bytes, manifest, highest, digest, clocks, cas,
                   {d.key.keyid: d for d in devices}, {d.device_id: d for d in devices})


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, mtimes and sizes of every file the snapshot depends on (a change in any means reload)."""
    files = [path / n for n in ("root.json", "root-trusted.json", "manifest.json", "state.json", "clocks.json")]
    for sub in ("devices", "tpm-cas", "roots"):
        folder = path / sub
        if folder.is_dir():
            files += sorted(folder.iterdir())
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(f), -1, -1))
    return tuple(out)


class TrustCache:
    """The trust snapshot, reloaded when the directory's files change. Safe to share between threads."""

    def __init__(self, path: Path, recheck_s: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._recheck_s = recheck_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshot: TrustSnapshot | None = None
        self._stamp: tuple[tuple[str, int, int], ...] = ()
        self._checked = 0.0
        self.loads = 0  # how many times the directory was parsed (tests and the benchmark read it)

    def get(self) -> TrustSnapshot:
        with self._lock:
            now = self._monotonic()
            if self._snapshot is not None and now - self._checked < self._recheck_s:
                return self._snapshot
            stamp = _stamp(self.path)
            if self._snapshot is None or stamp != self._stamp:
                self._snapshot = TrustSnapshot.load(self.path)
                self._stamp = stamp
                self.loads += 1
            self._checked = now
            return self._snapshot


@dataclass(frozen=True)
class DeviceMemory:
    """What the database remembers of a device that the core needs: the manifest high-water and
    the last accepted TPM clock (what ``flightseal verify`` keeps in ``state.json``/``clocks.json``)."""

    manifest_high: int = 0
    manifest_high_sha256: str | None = None
    clock: ClockInfo | None = None


def _signing_keyids(envelope: bytes) -> list[str]:
    try:
        doc: Any = json.loads(envelope)
        return [str(s["keyid"]) for s in doc["signatures"][: LIMITS.max_signatures]]
    except (ValueError, TypeError, KeyError, IndexError):
        return []


def named_devices(envelope: bytes, snap: TrustSnapshot) -> list[DeviceRecord]:
    """The enrolled devices whose key ids the envelope's signatures name, *unverified*.

    The core looks a signature's key id up among the devices it is given and ignores the rest, so
    handing it only these gives the very same result as handing it the whole fleet, without
    re-indexing thousands of enrolments per attestation.
    """
    out: list[DeviceRecord] = []
    for keyid in _signing_keyids(envelope):
        record = snap.by_keyid.get(keyid)
        if record is not None and record not in out:
            out.append(record)
    return out


def claimed_signer(envelope: bytes, snap: TrustSnapshot) -> DeviceRecord | None:
    """The first enrolled device the envelope names, *unverified*: only used to look up that
    device's memory before the core verifies; the core decides who really signed."""
    named = named_devices(envelope, snap)
    return named[0] if named else None


def verify(envelope: bytes, snap: TrustSnapshot, memory: DeviceMemory | None, now: datetime,
           config: FleetConfig, named: list[DeviceRecord] | None = None) -> VerificationResult:
    """Verify with the core; the result carries every reason except the nonce (decided by the caller).

    ``named``: :func:`named_devices` of this envelope and snapshot if the caller has it already."""
    memory = memory or DeviceMemory()
    if memory.manifest_high > snap.highest:
        highest, digest = memory.manifest_high, memory.manifest_high_sha256
    else:
        highest, digest = snap.highest, snap.highest_digest
    if named is None:
        named = named_devices(envelope, snap)
    clocks = {d.device_id: snap.clocks[d.device_id] for d in named if d.device_id in snap.clocks}
    if named and memory.clock is not None:
        clocks[named[0].device_id] = memory.clock
    result = verify_attestation(
        envelope, trust=snap.state, devices=named, manifest_bytes=snap.manifest_bytes,
        nonce=_PLACEHOLDER_NONCE, now=now, highest_manifest_version=highest, highest_manifest_digest=digest,
        quote_checker=default_quote_checker(clocks), tpm_vendor_cas=snap.tpm_cas,
        policy=VerifierPolicy(allow_software_keys=config.allow_software_keys, max_age=config.max_age,
                              max_clock_skew=config.max_clock_skew, require_quote=config.require_quote),
    )
    if result.predicate is None:
        return result
    kept = tuple(r for r in result.reasons if r.code is not Code.NONCE_MISMATCH)
    return VerificationResult(kept, result.predicate, result.device)


def clock_json(clock: ClockInfo) -> str:
    return json.dumps({"clock": clock.clock, "reset_count": clock.reset_count, "restart_count": clock.restart_count,
                       "safe": clock.safe})


def clock_from_json(text: str | None) -> ClockInfo | None:
    if not text:
        return None
    d = json.loads(text)
    try:
        return ClockInfo(int(d["clock"]), int(d["reset_count"]), int(d["restart_count"]), bool(d["safe"]))
    except (KeyError, TypeError, ValueError):
        raise FormatError("fleet database", "a device's stored TPM clock is corrupt", "devices.tpm_clock") from None
