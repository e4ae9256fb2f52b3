"""One attestation pass after measuring: verify the manifest, appraise, seal.

Shared by ``flightseal attest``, the daemon and the challenge responder, so there is one path
from measurements to a signed attestation. A manifest that fails verification does not stop the
pass: the verdict fails with the manifest's reason, and that failing verdict is still sealed and
sent to the gate, so the FC refuses to arm and the operator sees why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from agent import __version__
from attest import dsse, evidence
from attest.appraise import appraise, manifest_failure
from attest.errors import FlightSealError
from attest.models import Code, Measurement, Reason, Verdict
from attest.signer import Signer
from attest.trust import TrustedState, VerifiedManifest

# A quoter gets the statement digest (the qualifying data) and returns the quote's JSON form.
Quoter = Callable[[bytes], dict[str, object]]


@dataclass(frozen=True)
class Sealed:
    envelope: dsse.Envelope
    predicate: evidence.Predicate
    verified: VerifiedManifest | None

    @property
    def verdict(self) -> Verdict:
        return self.predicate.verdict


def check_manifest(trust: TrustedState, manifest_bytes: bytes, now: datetime, highest_seen: int = 0,
                   highest_digest: str | None = None) -> VerifiedManifest | FlightSealError:
    try:
        return trust.verify_manifest(manifest_bytes, now, highest_seen, highest_digest)
    except FlightSealError as exc:
        return exc


def seal_measurements(
    measurements: Sequence[Measurement],
    manifest: VerifiedManifest | FlightSealError,
    signer: Signer,
    *,
    device_id: str,
    airframe: str,
    nonce: bytes,
    now: datetime,
    quoter: Quoter | None = None,
    problems: Sequence[Reason] = (),
) -> Sealed:
    """``problems`` are what the collectors could not measure: they fail the verdict (fail closed)."""
    if isinstance(manifest, FlightSealError):
        verdict = Verdict.from_reasons([manifest_failure(manifest), *problems])
        ref = None
        verified = None
    else:
        appraised = appraise(measurements, manifest.manifest)
        binding = manifest.manifest.airframe
        wrong = [] if binding.covers(airframe, device_id) else [Reason(
            Code.WRONG_HARDWARE, f"manifest v{manifest.manifest.version} is for {binding.model}"
            f"{' devices ' + ', '.join(binding.device_ids) if binding.device_ids else ''}, not this {airframe} "
            f"({device_id})", "device")]
        verdict = Verdict.from_reasons([*wrong, *appraised.reasons, *problems])
        ref = evidence.ManifestRef(manifest.digest, manifest.manifest.version)
        verified = manifest
    predicate = evidence.Predicate(
        device_id=device_id, airframe=airframe, key_kind=signer.kind, nonce=nonce, time=now, manifest=ref,
        measurements=tuple(measurements), verdict=verdict, agent_version=__version__,
    )
    if quoter is not None:
        from dataclasses import replace

        predicate = replace(predicate, quote=quoter(evidence.statement_digest(predicate)))
    return Sealed(evidence.seal(predicate, signer), predicate, verified)
