"""Verify an attestation handed over for vetting, and build its bill (the same core as ``flightseal verify``).

A procurement check runs on evidence someone handed over, often days old and made for another
verifier's nonce. So the nonce is optional (without one, freshness is only the age limit the caller
sets, and the bill says so), and nothing is written to the trust directory: vetting never moves the
trusted manifest version or TPM clocks the way a live verification does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from attest import dsse, timeutil
from attest.bom import Bill, Signers, build_bill
from attest.errors import FlightSealError, FormatError
from attest.evidence import parse_statement
from attest.limits import LIMITS
from attest.manifest import Manifest
from attest.trust import TrustedState
from attest.verify import VerificationResult, VerifierPolicy, verify_attestation
from truststore.trustdir import TrustDir


@dataclass(frozen=True)
class Vetting:
    result: VerificationResult
    bill: Bill | None  # None: the attestation names no enrolled device, so nothing in it can be read as evidence


def vet_evidence(trust_dir: Path, envelope: bytes, *, nonce: bytes | None, max_age: timedelta,
                 allow_software_keys: bool = False, manifest_path: Path | None = None,
                 now: datetime | None = None) -> Vetting:
    """Verify ``envelope`` against ``trust_dir`` and build its bill.

    Raises:
        FormatError: the attestation or the manifest is not even a signed envelope, or the trust
            directory is malformed (unusable input, exit 2; a failed check is a reason instead).
        FlightSealError: the trust directory's root does not verify.
    """
    td = TrustDir(trust_dir)
    state = td.trusted_state()
    return vet_with_state(td, state, envelope, nonce=nonce, max_age=max_age, allow_software_keys=allow_software_keys,
                          manifest_bytes=td.manifest_bytes(manifest_path), now=now)


def vet_with_state(td: TrustDir, state: TrustedState, envelope: bytes, *, nonce: bytes | None, max_age: timedelta,
                   allow_software_keys: bool, manifest_bytes: bytes, now: datetime | None = None) -> Vetting:
    from hardware.quote_check import default_quote_checker

    parsed = dsse.Envelope.from_bytes(envelope, "attestation", LIMITS.max_envelope_bytes)
    menv = dsse.Envelope.from_bytes(manifest_bytes, "manifest", LIMITS.max_manifest_bytes)
    if nonce is None:  # the verifier below still checks the signature over this very nonce
        try:
            nonce = parse_statement(parsed).nonce
        except FormatError as exc:
            raise FormatError("attestation", exc.detail, exc.field) from None
        nonce_checked = False
    else:
        nonce_checked = True
    devices = td.devices(state)
    highest, highest_digest = td.highest_manifest()
    result = verify_attestation(
        envelope, trust=state, devices=devices, manifest_bytes=manifest_bytes, nonce=nonce,
        now=now or timeutil.now(), highest_manifest_version=highest, highest_manifest_digest=highest_digest,
        quote_checker=default_quote_checker(td.device_clocks()), tpm_vendor_cas=td.tpm_cas(),
        policy=VerifierPolicy(allow_software_keys=allow_software_keys, max_age=max_age))
    if result.predicate is None or result.device is None:
        return Vetting(result, None)
    manifest = Manifest.from_json(menv.payload_json("manifest", LIMITS.max_manifest_bytes))
    bill = build_bill(result.predicate, manifest, verification=result.reasons,
                      signers=_signers(state, menv, result.device.key.keyid),
                      manifest_digest=hashlib.sha256(menv.payload).hexdigest(), nonce_checked=nonce_checked)
    return Vetting(result, bill)


def _signers(state: TrustedState, menv: dsse.Envelope, device_keyid: str) -> Signers:
    root = state.root
    manifest_role, enrol_role = root.roles["manifest"], root.roles["enrollment"]
    try:
        signed = dsse.verify(menv, dsse.MANIFEST_PAYLOAD_TYPE, root.role_keys("manifest"), 1, "manifest")
    except FlightSealError:
        signed = set()
    return Signers(tuple(sorted(signed)), manifest_role.threshold, tuple(enrol_role.keyids), enrol_role.threshold,
                   device_keyid, root.version)
