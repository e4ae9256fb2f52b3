"""The operator's offline verification, one core for ``flightseal verify`` and MAVProxy's ``fs verify``.

It reads the trust directory, verifies the attestation exactly as the fleet service does, and on a
pass records what it learnt (the highest manifest version, the root in force, the TPM clock), so a
later rollback is caught. Printing and exit codes stay with each caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from attest import dsse, timeutil
from attest.limits import LIMITS
from attest.manifest import Manifest
from attest.verify import VerificationResult, VerifierPolicy, verify_attestation
from truststore.trustdir import TrustDir


@dataclass(frozen=True)
class Checked:
    """A verification's result and the manifest it was appraised against."""

    result: VerificationResult
    manifest_bytes: bytes

    @property
    def passed(self) -> bool:
        return self.result.passed

    def lines(self) -> list[str]:
        """What an operator reads: ``PASS device …`` and the manifest's posture, or one ``FAIL`` line per reason."""
        result, p = self.result, self.result.predicate
        if result.passed and p is not None and result.device is not None:
            return [f"PASS device {result.device.device_id} ({result.device.airframe}, {result.device.key_kind} key): "
                    f"{len(p.measurements)} measurements match manifest v{p.manifest.version if p.manifest else '?'}"
                    f", attested {timeutil.format(p.time)}",
                    f"  {self.manifest().describe_posture()}",
                    f"  {self.manifest().describe_boot()}"]
        return [f"FAIL {r}" for r in result.reasons]

    def manifest(self) -> Manifest:
        env = dsse.Envelope.from_bytes(self.manifest_bytes, "manifest", LIMITS.max_manifest_bytes)
        return Manifest.from_json(env.payload_json("manifest", LIMITS.max_manifest_bytes))


def verify_envelope(envelope: bytes, trust_dir: Path, nonce: bytes, *, manifest_path: Path | None = None,
                    expected_device: str | None = None, max_age: int = 300, allow_software_keys: bool = False,
                    require_quote: bool = False) -> Checked:
    """Verify ``envelope`` against ``trust_dir`` and the challenge ``nonce``; record what a pass teaches.

    Raises:
        FormatError: the trust directory or the manifest is not usable.
        FlightSealError: a root, enrolment or manifest record that does not verify.
        OSError: a trust file cannot be read.
    """
    td = TrustDir(trust_dir)
    state = td.trusted_state()
    devices = td.devices(state)
    highest, highest_digest = td.highest_manifest()  # an equal version must be the very same document
    from hardware.quote_check import default_quote_checker

    manifest_bytes = td.manifest_bytes(manifest_path)
    # a manifest file that is not even a signed envelope is unusable input (exit 2), not a failed check
    dsse.Envelope.from_bytes(manifest_bytes, f"manifest {manifest_path or td.manifest_path}", LIMITS.max_manifest_bytes)
    result = verify_attestation(
        envelope, trust=state, devices=devices, manifest_bytes=manifest_bytes,
        nonce=nonce, now=timeutil.now(), expected_device=expected_device,
        highest_manifest_version=highest, highest_manifest_digest=highest_digest,
        quote_checker=default_quote_checker(td.device_clocks()), tpm_vendor_cas=td.tpm_cas(),
        policy=VerifierPolicy(allow_software_keys=allow_software_keys, max_age=timedelta(seconds=max_age),
                              require_quote=require_quote),
    )
    if result.passed and result.predicate is not None and result.predicate.manifest is not None:
        td.record_manifest(result.predicate.manifest.version, result.predicate.manifest.sha256)
        td.record_root()
        if result.predicate.quote is not None and result.device is not None:
            from attest.quote import observed_clock

            td.record_clock(result.device.device_id, observed_clock(result.predicate.quote))
    return Checked(result, manifest_bytes)
