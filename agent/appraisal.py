"""The APPRAISE step of a pass: is the manifest trusted, and do the measurements match it?

Nothing here signs or sends. The outcome is an :class:`Appraisal`, a value that the SEAL step
(:mod:`agent.attestation`) signs as it is. A manifest that cannot be trusted is not an error here:
it becomes the verdict's reason (``manifest-expired``, ``manifest-rollback``, ...), so the failing
verdict is still sealed and sent to the gate, and the FC refuses to arm with the reason named
(the "collect reasons" half of ``attest/errors.py``'s convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from attest import evidence
from attest.appraise import appraise, manifest_failure
from attest.errors import FlightSealError
from attest.models import Code, Measurement, Reason, Verdict
from attest.trust import TrustedState, VerifiedManifest

# The manifest in force: verified, or the reason it is not (never an exception carried as a value).
ManifestStatus = VerifiedManifest | Reason


@dataclass(frozen=True)
class Appraisal:
    """What the agent concluded, before anything is signed."""

    verdict: Verdict
    manifest: VerifiedManifest | None  # None: the manifest itself failed (its reason is in the verdict)

    @property
    def manifest_ref(self) -> evidence.ManifestRef | None:
        return None if self.manifest is None else evidence.ManifestRef(self.manifest.digest,
                                                                        self.manifest.manifest.version)


def check_manifest(trust: TrustedState, manifest_bytes: bytes, now: datetime, highest_seen: int = 0,
                   highest_digest: str | None = None) -> ManifestStatus:
    """The manifest verified against the root in force, or the reason it cannot be trusted (expired,
    rolled back, below threshold, badly signed, malformed). Never raises for a bad manifest."""
    try:
        return trust.verify_manifest(manifest_bytes, now, highest_seen, highest_digest)
    except FlightSealError as exc:
        return manifest_failure(exc)


def appraise_pass(measurements: Sequence[Measurement], manifest: ManifestStatus, *, device_id: str, airframe: str,
                  problems: Sequence[Reason] = ()) -> Appraisal:
    """Appraise one pass. ``problems`` are what the collectors could not measure: each fails the
    verdict (fail closed), as does a manifest that binds another airframe (``wrong-hardware``)."""
    if isinstance(manifest, Reason):
        return Appraisal(Verdict.from_reasons([manifest, *problems]), None)
    appraised = appraise(measurements, manifest.manifest)
    binding = manifest.manifest.airframe
    wrong = [] if binding.covers(airframe, device_id) else [Reason(
        Code.WRONG_HARDWARE, f"manifest v{manifest.manifest.version} is for {binding.model}"
        f"{' devices ' + ', '.join(binding.device_ids) if binding.device_ids else ''}, not this {airframe} "
        f"({device_id})", "device")]
    return Appraisal(Verdict.from_reasons([*wrong, *appraised.reasons, *problems]), manifest)
