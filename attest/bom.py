"""The bill of materials of one attested airframe: every part, its class, origin, and how it was measured.

Rules, in the order they apply (issue 15, ADR 0023):

- One entry per thing measured, never merged away: the flight controller (``fc``), its firmware
  (``fc.firmware``: identity plus image), each Lua script, the parameter set, each MAVLink or
  DroneCAN part, the companion OS and the agent. Posture measurements are not parts.
- Vendor, model, origin, supplier chain and documents come from the *signed manifest*: the first
  approved component whose selector matches the entry (as appraisal matches parts). A part's own
  claims fill in only what the manifest does not say, and are marked as reported.
- The class is the manifest's; without one it is derived: FC firmware, scripts, companion OS and
  agent are operating software, the board is the flight controller, anything else is "other".
- An entry's strength is the strongest measurement behind it; a manifest part no measurement
  matches is *declared only* (strength ``None``), e.g. the operator's ground-control software.

Bytes in, values out: no I/O, so the CLI, the report writers and the fleet share one bill.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from attest.evidence import Predicate
from attest.manifest import ApprovedComponent, Document, Manifest, Supplier
from attest.models import Kind, Measurement, Reason, Strength

OPERATING_SOFTWARE = "operating-software"
FLIGHT_CONTROLLER = "flight-controller"
OTHER = "other"

HOW_MEASURED: Mapping[Strength | None, str] = {
    Strength.FLASH_READ: "read back from the flight controller's flash",
    Strength.IMAGE_AND_BOOTLOADER: "image file checked against the bootloader's flash CRC",
    Strength.SELF_REPORTED: "self-reported by the software itself",
    Strength.OBSERVED: "observed on the bus (presence only)",
    None: "declared by the manufacturer, not measured",
}


def how_measured(strength: Strength | None) -> str:
    return HOW_MEASURED[strength]


@dataclass(frozen=True)
class Entry:
    """One line of the bill."""

    ref: str  # the measured component id, or the manifest selector of a declared-only part
    name: str
    part_class: str
    kind: str  # hardware, firmware, script, parameters, operating-system, application, part
    strength: Strength | None  # None: declared only
    vendor: str = ""
    model: str = ""
    origin: str = ""
    origin_reported: bool = False  # the origin is the part's own claim, not the signed manifest's
    supplier: Supplier | None = None
    documents: tuple[Document, ...] = ()
    version: str = ""
    git_hash: str = ""
    digests: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.strength is not None

    @property
    def how(self) -> str:
        return how_measured(self.strength)


@dataclass(frozen=True)
class Signers:
    """Who vouched for the evidence: manifest keys that signed, and the roles' keys and thresholds."""

    manifest_keyids: tuple[str, ...]
    manifest_threshold: int
    enrollment_keyids: tuple[str, ...]
    enrollment_threshold: int
    device_keyid: str
    root_version: int


@dataclass(frozen=True)
class Bill:
    device_id: str
    airframe: str
    key_kind: str
    time: datetime
    agent_version: str
    manifest_version: int
    manifest_digest: str
    entries: tuple[Entry, ...]
    verification: tuple[Reason, ...]  # the offline verification's reasons; empty: it passed
    signers: Signers | None = None
    nonce_checked: bool = True

    @property
    def verified(self) -> bool:
        return not self.verification

    def of_class(self, part_class: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.part_class == part_class)


def build_bill(predicate: Predicate, manifest: Manifest, *, verification: Sequence[Reason] = (),
               signers: Signers | None = None, manifest_digest: str = "", nonce_checked: bool = True) -> Bill:
    """The bill of one attestation against the manifest it names. Never raises for odd evidence."""
    by_kind: dict[Kind, list[Measurement]] = {k: [] for k in Kind}
    for m in predicate.measurements:
        by_kind[m.kind].append(m)
    entries = [*_flight_controller(by_kind), *(_script(m) for m in by_kind[Kind.SCRIPT]),
               *(_params(m) for m in by_kind[Kind.PARAMS]), *(_part(m) for m in by_kind[Kind.COMPONENT]),
               *(_companion(m) for m in by_kind[Kind.COMPANION])]
    measured_parts = {m.component: m for m in by_kind[Kind.COMPONENT]}
    vouched = [_vouch(e, manifest.components, measured_parts.get(e.ref)) for e in entries]
    used = {id(c) for e in entries if (c := _match(e.ref, manifest.components, measured_parts.get(e.ref)))}
    declared = [_declared(c) for c in manifest.components if id(c) not in used]
    return Bill(
        device_id=predicate.device_id, airframe=predicate.airframe, key_kind=predicate.key_kind.value,
        time=predicate.time, agent_version=predicate.agent_version,
        manifest_version=predicate.manifest.version if predicate.manifest else manifest.version,
        manifest_digest=manifest_digest or (predicate.manifest.sha256 if predicate.manifest else ""),
        entries=(*vouched, *declared), verification=tuple(verification), signers=signers,
        nonce_checked=nonce_checked,
    )


def _claim(m: Measurement, name: str) -> str:
    value = m.claims.get(name)
    return "" if value is None else str(value)


def _strongest(ms: Iterable[Measurement]) -> Strength | None:
    return max((m.strength for m in ms), default=None)


def _flight_controller(by_kind: Mapping[Kind, list[Measurement]]) -> list[Entry]:
    ident = by_kind[Kind.FIRMWARE][:1]
    image = by_kind[Kind.FIRMWARE_IMAGE][:1]
    if not ident and not image:
        return []
    fc_ms = (*ident, *image)
    strength = _strongest(fc_ms)
    sources = tuple(m.source for m in fc_ms)
    details = {k: _claim(ident[0], k) for k in ("board_id", "uid") if ident and _claim(ident[0], k)}
    digests = dict(image[0].digests) if image else dict(ident[0].digests)
    board = Entry("fc", "flight controller", FLIGHT_CONTROLLER, "hardware", strength, sources=sources, details=details)
    firmware = Entry("fc.firmware", f"FC firmware {_claim(ident[0], 'vehicle') if ident else ''}".strip(),
                     OPERATING_SOFTWARE, "firmware", strength,
                     version=_claim(ident[0], "version") if ident else "",
                     git_hash=_claim(ident[0], "git_hash") if ident else "", digests=digests, sources=sources)
    return [board, firmware]


def _script(m: Measurement) -> Entry:
    path = _claim(m, "path") or m.component.removeprefix("fc.script:")
    return Entry(m.component, f"Lua script {path}", OPERATING_SOFTWARE, "script", m.strength,
                 digests=dict(m.digests), sources=(m.source,))


def _params(m: Measurement) -> Entry:
    count = _claim(m, "count")
    return Entry(m.component, "FC parameter set", OTHER, "parameters", m.strength, digests=dict(m.digests),
                 sources=(m.source,), details={"parameters": count} if count else {})


def _part(m: Measurement) -> Entry:
    details = {k: _claim(m, k) for k in ("hardware_id", "type", "name") if _claim(m, k)}
    return Entry(m.component, _claim(m, "name") or m.component, OTHER, "part", m.strength,
                 vendor=_claim(m, "vendor"), model=_claim(m, "model"), origin=_claim(m, "origin"),
                 origin_reported=bool(_claim(m, "origin")), version=_claim(m, "version"),
                 digests=dict(m.digests), sources=(m.source,), details=details)


def _companion(m: Measurement) -> Entry:
    if m.component == "companion.os":
        name = _claim(m, "os") or "companion OS"
        details = {k: _claim(m, k) for k in ("kernel", "machine") if _claim(m, k)}
        return Entry(m.component, name, OPERATING_SOFTWARE, "operating-system", m.strength,
                     version=_claim(m, "os_version"), digests=dict(m.digests), sources=(m.source,), details=details)
    return Entry(m.component, "FlightSeal agent" if m.component == "companion.agent" else m.component,
                 OPERATING_SOFTWARE, "application", m.strength, version=_claim(m, "agent_version"),
                 digests=dict(m.digests), sources=(m.source,))


def _match(ref: str, components: Iterable[ApprovedComponent], m: Measurement | None) -> ApprovedComponent | None:
    """The approved component vouching for ``ref``: the same rule as appraisal (selector, then hardware id)."""
    hw = _claim(m, "hardware_id") if m is not None else ""
    for c in components:
        if fnmatch.fnmatchcase(ref, c.selector) and (m is None or not c.hardware_ids or hw in c.hardware_ids):
            return c
    return None


def _vouch(e: Entry, components: Iterable[ApprovedComponent], m: Measurement | None) -> Entry:
    c = _match(e.ref, components, m)
    if c is None:
        return e
    return Entry(e.ref, c.name if e.kind == "part" or e.kind == "hardware" else e.name,
                 c.part_class or e.part_class, e.kind, e.strength, vendor=c.vendor, model=c.model, origin=c.origin,
                 supplier=c.supplier, documents=c.documents, version=e.version, git_hash=e.git_hash,
                 digests=e.digests, sources=e.sources, details=e.details)


def _declared(c: ApprovedComponent) -> Entry:
    return Entry(c.selector, c.name, c.part_class or OTHER, "part", None, vendor=c.vendor, model=c.model,
                 origin=c.origin, supplier=c.supplier, documents=c.documents,
                 digests={"sha256": c.firmware_sha256[0]} if c.firmware_sha256 else {})
