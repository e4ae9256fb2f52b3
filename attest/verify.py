"""The offline verifier: does this attestation prove this airframe is fit to fly, right now?

It needs nothing but bytes already on the ground station: the pinned root, the enrolled devices,
the manifest, the attestation and the operator's own nonce. It never trusts the device's verdict:
it re-verifies the manifest, re-appraises the measurements and reports every reason it finds.
The result passes only if no check produced a reason; there is no default pass.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from attest import dsse
from attest.appraise import appraise, manifest_failure
from attest.boot import appraise_boot
from attest.enrollment import DeviceRecord
from attest.errors import FlightSealError, FormatError
from attest.evidence import Predicate, parse_statement
from attest.keys import KeyKind
from attest.limits import LIMITS
from attest.models import Code, Reason
from attest.tpm_evidence import check_record
from attest.trust import TrustedState

QuoteChecker = Callable[[Predicate, DeviceRecord], list[Reason]]


@dataclass(frozen=True)
class VerifierPolicy:
    allow_software_keys: bool = False
    max_age: timedelta = timedelta(minutes=5)
    max_clock_skew: timedelta = timedelta(seconds=30)
    require_quote: bool = False


@dataclass(frozen=True)
class VerificationResult:
    reasons: tuple[Reason, ...]
    predicate: Predicate | None
    device: DeviceRecord | None

    @property
    def passed(self) -> bool:
        return self.predicate is not None and self.device is not None and not self.reasons


def verify_attestation(
    envelope_bytes: bytes,
    *,
    trust: TrustedState,
    devices: Sequence[DeviceRecord],
    manifest_bytes: bytes,
    nonce: bytes,
    now: datetime,
    policy: VerifierPolicy = VerifierPolicy(),
    expected_device: str | None = None,
    highest_manifest_version: int = 0,
    quote_checker: QuoteChecker | None = None,
    highest_manifest_digest: str | None = None,
    tpm_vendor_cas: Sequence[x509.Certificate] = (),
) -> VerificationResult:
    """Verify one attestation offline, never trusting the device's own verdict: the
    signature and enrolment, the identity, freshness (nonce and age), the manifest (root in
    force, expiry, rollback), a re-appraisal of the measurements, and the TPM quote.

    Returns a :class:`VerificationResult`; ``passed`` only when no reason was found. Never
    raises for bad evidence: a malformed envelope is ``envelope-invalid``, not an exception."""
    try:
        envelope = dsse.Envelope.from_bytes(envelope_bytes, "attestation", LIMITS.max_envelope_bytes)
    except FlightSealError as exc:
        return VerificationResult((Reason(Code.ENVELOPE_INVALID, str(exc)),), None, None)
    if envelope.payload_type != dsse.INTOTO_PAYLOAD_TYPE:
        return VerificationResult((Reason(Code.ENVELOPE_INVALID,
                                          f"payload type {envelope.payload_type!r} is not an in-toto statement"),),
                                  None, None)

    device, sig_reason = _find_signer(envelope, devices)
    if device is None:
        return VerificationResult((sig_reason,) if sig_reason else (), None, None)
    try:
        predicate = parse_statement(envelope)
    except FormatError as exc:
        return VerificationResult((Reason(Code.ENVELOPE_INVALID, str(exc)),), None, device)

    reasons: list[Reason] = []
    reasons += _identity(predicate, device, expected_device, policy)
    reasons += _tpm_proof(device, tpm_vendor_cas)
    reasons += _freshness(predicate, nonce, now, policy)
    reasons += _manifest_and_appraisal(predicate, device, trust, manifest_bytes, now, highest_manifest_version,
                                       highest_manifest_digest)
    if predicate.quote is not None:
        if quote_checker is None:
            reasons.append(Reason(Code.QUOTE_INVALID, "attestation carries a TPM quote this verifier cannot check"))
        else:
            reasons += quote_checker(predicate, device)
    elif policy.require_quote or device.key_kind is KeyKind.TPM:
        reasons.append(Reason(Code.QUOTE_MISSING, "no TPM quote, but the policy or the device's key kind needs one"))
    return VerificationResult(tuple(reasons), predicate, device)


def _find_signer(envelope: dsse.Envelope, devices: Sequence[DeviceRecord]) -> tuple[DeviceRecord | None,
                                                                                     Reason | None]:
    by_keyid = {d.key.keyid: d for d in devices}
    message = dsse.pae(envelope.payload_type, envelope.payload)
    known = [s for s in envelope.signatures if s.keyid in by_keyid]
    if not known:
        return None, Reason(Code.DEVICE_UNKNOWN, "not signed by any enrolled device key")
    for s in known:
        record = by_keyid[s.keyid]
        if record.key.verify(s.sig, message):
            return record, None
    return None, Reason(Code.ENVELOPE_SIGNATURE,
                        f"signature by device {known[0].keyid[:12]}… does not verify (altered in transit?)")


def _identity(p: Predicate, device: DeviceRecord, expected: str | None, policy: VerifierPolicy) -> list[Reason]:
    out = []
    if p.device_id != device.device_id:
        out.append(Reason(Code.WRONG_DEVICE, f"statement claims device {p.device_id}, but the key is enrolled "
                          f"for {device.device_id}", "device"))
    if p.airframe != device.airframe:
        out.append(Reason(Code.WRONG_DEVICE, f"statement claims airframe {p.airframe}, but device "
                          f"{device.device_id} is enrolled as a {device.airframe}", "airframe"))
    if expected is not None and device.device_id != expected:
        out.append(Reason(Code.WRONG_DEVICE, f"attestation is from device {device.device_id}, expected {expected}",
                          "device"))
    if p.key_kind != device.key_kind:
        out.append(Reason(Code.WRONG_DEVICE, f"statement claims a {p.key_kind} key; enrolled as {device.key_kind}",
                          "device"))
    if device.key_kind is KeyKind.SOFTWARE and not policy.allow_software_keys:
        out.append(Reason(Code.SOFTWARE_KEY, "signed with a development software key; policy requires hardware",
                          "device"))
    return out


def _tpm_proof(device: DeviceRecord, cas: Sequence[x509.Certificate]) -> list[Reason]:
    """A ``tpm`` device must carry proof that its key is in a certified TPM (ADR 0018); with the
    verifier's own vendor CAs (``tpm-cas/``) its EK certificate must chain to one of them too."""
    if device.key_kind is not KeyKind.TPM:
        return []
    return [Reason(Code.DEVICE_TPM_UNPROVEN, why, "device")
            for why in check_record(device.tpm_evidence, device.key, device.tpm_ak_name, cas)]


def _freshness(p: Predicate, nonce: bytes, now: datetime, policy: VerifierPolicy) -> list[Reason]:
    out = []
    if not hmac.compare_digest(p.nonce, nonce):
        out.append(Reason(Code.NONCE_MISMATCH, "attestation answers another challenge (replayed?)", "nonce"))
    if p.time > now + policy.max_clock_skew:
        out.append(Reason(Code.ATTESTATION_FUTURE, f"made at {p.time:%H:%M:%S}, after now", "time"))
    elif now - p.time > policy.max_age:
        out.append(Reason(Code.ATTESTATION_STALE, f"made at {p.time:%Y-%m-%dT%H:%M:%SZ}, older than "
                          f"{int(policy.max_age.total_seconds())} s", "time"))
    return out


def _manifest_and_appraisal(p: Predicate, device: DeviceRecord, trust: TrustedState, manifest_bytes: bytes,
                            now: datetime, highest: int, highest_digest: str | None) -> list[Reason]:
    try:
        verified = trust.verify_manifest(manifest_bytes, now, highest, highest_digest)
    except FlightSealError as exc:
        return [manifest_failure(exc)]
    out = []
    if p.manifest is None or p.manifest.sha256 != verified.digest or p.manifest.version != verified.manifest.version:
        out.append(Reason(Code.MANIFEST_REFERENCE, "attestation was appraised against another manifest "
                          f"(device used {p.manifest.version if p.manifest else 'none'}, "
                          f"you have {verified.manifest.version})", "manifest"))
    binding = verified.manifest.airframe
    covered = binding.covers(device.airframe, device.device_id)
    if not covered:
        out.append(Reason(Code.WRONG_HARDWARE, f"device {device.device_id} ({device.airframe}) is not an airframe "
                          f"this manifest covers ({binding.model})", "device"))
    verdict = appraise(p.measurements, verified.manifest)
    out += verdict.reasons
    out += appraise_boot(p.quote, verified.manifest.companion_boot)  # the companion's boot (ADR 0019)
    if p.verdict.passed != (verdict.passed and covered):  # the device refuses another airframe's manifest too
        out.append(Reason(Code.VERDICT_DISAGREES, f"device reported {'pass' if p.verdict.passed else 'fail'}, "
                          f"appraisal gives {'pass' if verdict.passed else 'fail'}", "verdict"))
    return out
