"""The SEAL step of a pass: an :class:`~agent.appraisal.Appraisal` signed into an attestation.

Shared by ``flightseal attest``, the daemon and the challenge responder, so there is one path
from measurements to a signed attestation. A manifest that fails verification does not stop the
pass: the verdict fails with the manifest's reason, and that failing verdict is still sealed and
sent to the gate, so the FC refuses to arm and the operator sees why.

The quote also carries the companion's TCG boot event log (:func:`with_boot_log`), read at each
pass: the verifier replays it against the quoted boot PCRs and judges it (ADR 0019). The agent does
not judge its own boot: a companion that booted something else would not be trusted to say so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from agent import __version__
from agent.appraisal import Appraisal, ManifestStatus, appraise_pass, check_manifest
from attest import dsse, evidence
from attest.errors import FormatError
from attest.limits import LIMITS
from attest.models import Measurement, Reason, Verdict
from attest.quote import Quote
from attest.signer import Signer
from attest.trust import VerifiedManifest

__all__ = ["Sealed", "check_manifest", "seal", "seal_measurements", "with_boot_log"]

# A quoter gets the statement digest (the qualifying data) and returns the quote's JSON form.
Quoter = Callable[[bytes], dict[str, object]]
DEFAULT_BOOT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")  # Linux's copy of the firmware's log

log = logging.getLogger(__name__)


def read_boot_log(path: Path) -> bytes:
    """The companion's boot event log, or ``b""`` when there is none (no file: no measured boot).

    A log that exists but cannot be read (permissions, too large, not a regular file) is logged
    and left out: the verifier then says the log is missing if the manifest requires one, so a
    companion is never refused for this without a named reason, nor passed without its log.
    Linux's securityfs file reports size 0, so the read is bounded by reading, not by ``stat``.
    """
    from hardware.files import read_bounded

    if not path.exists():
        return b""
    try:
        return read_bounded(path, "boot event log", LIMITS.max_boot_log_bytes)
    except FormatError as exc:
        log.warning("boot event log left out of the quote: %s", exc)
        return b""


def with_boot_log(quoter: Quoter | None, path: Path | None) -> Quoter | None:
    """``quoter``, with the boot event log at ``path`` (read at each quote) carried in its quotes."""
    if quoter is None or path is None:
        return quoter
    inner = quoter

    def quote(qualifying: bytes) -> dict[str, object]:
        boot_log = read_boot_log(path)
        made = inner(qualifying)
        if not boot_log:
            return made
        return replace(Quote.from_json(made), boot_log=boot_log).to_json()

    return quote


@dataclass(frozen=True)
class Sealed:
    """A signed attestation, with the predicate it carries and the manifest it was appraised against."""

    envelope: dsse.Envelope
    predicate: evidence.Predicate
    verified: VerifiedManifest | None

    @property
    def verdict(self) -> Verdict:
        return self.predicate.verdict


def seal(appraisal: Appraisal, measurements: Sequence[Measurement], signer: Signer, *, device_id: str,
         airframe: str, nonce: bytes, now: datetime, quoter: Quoter | None = None) -> Sealed:
    """The SEAL step: the appraisal as it stands, signed with the device key (and quoted by the TPM
    when the key can quote). Raises :class:`~attest.errors.KeyLoadError` or ``OSError`` when the key
    cannot sign; a failing verdict is sealed like a passing one."""
    predicate = evidence.Predicate(
        device_id=device_id, airframe=airframe, key_kind=signer.kind, nonce=nonce, time=now,
        manifest=appraisal.manifest_ref, measurements=tuple(measurements), verdict=appraisal.verdict,
        agent_version=__version__,
    )
    if quoter is not None:
        predicate = replace(predicate, quote=quoter(evidence.statement_digest(predicate)))
    return Sealed(evidence.seal(predicate, signer), predicate, appraisal.manifest)


def seal_measurements(measurements: Sequence[Measurement], manifest: ManifestStatus, signer: Signer, *,
                      device_id: str, airframe: str, nonce: bytes, now: datetime, quoter: Quoter | None = None,
                      problems: Sequence[Reason] = ()) -> Sealed:
    """Appraise, then seal: the whole path for callers that have measurements in hand
    (``flightseal attest``, the demo, the tests). The daemon runs the two steps as its own states."""
    appraisal = appraise_pass(measurements, manifest, device_id=device_id, airframe=airframe, problems=problems)
    return seal(appraisal, measurements, signer, device_id=device_id, airframe=airframe, nonce=nonce, now=now,
                quoter=quoter)
