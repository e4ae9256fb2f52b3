"""Appraisal: measurements × verified manifest → verdict, with every reason.

Like Keylime's failure events, reasons are collected, not thrown: an operator wants to see that
the firmware *and* a script *and* a part are wrong in one go. Each rule below handles one kind
of measurement. Anything the manifest requires that was not measured is ``measurement-missing``;
anything measured that the manifest does not approve fails. Nothing passes by default: an empty
manifest approves no firmware.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from attest import params as paramdigest
from attest.errors import (
    ExpiredMetadataError,
    FlightSealError,
    RollbackError,
    SignatureError,
    ThresholdError,
)
from attest.limits import LIMITS
from attest.manifest import ApprovedComponent, Firmware, Manifest
from attest.models import PARAM_COMPONENT_PREFIX, Code, Kind, Measurement, Reason, Verdict


def manifest_failure(exc: FlightSealError) -> Reason:
    """Map a manifest verification error to the reason the pilot and operator see."""
    if isinstance(exc, ExpiredMetadataError):
        code = Code.MANIFEST_EXPIRED
    elif isinstance(exc, RollbackError):
        code = Code.MANIFEST_ROLLBACK
    elif isinstance(exc, ThresholdError):
        code = Code.MANIFEST_THRESHOLD
    elif isinstance(exc, SignatureError):
        code = Code.MANIFEST_SIGNATURE
    else:
        code = Code.MANIFEST_INVALID
    return Reason(code, str(exc), "manifest")


def appraise(measurements: Sequence[Measurement], manifest: Manifest) -> Verdict:
    """Appraise measurements against a verified manifest: one rule per kind (firmware,
    scripts, parameters, components, companion, posture), every mismatch a reason.

    Never raises for a mismatch: a failing verdict lists every reason at once (the
    "collect reasons" half of ``attest/errors.py``'s convention)."""
    reasons: list[Reason] = []
    by_kind: dict[Kind, list[Measurement]] = {k: [] for k in Kind}
    for m in measurements:
        by_kind[m.kind].append(m)
    reasons += _strength(measurements, manifest)
    reasons += _firmware(by_kind[Kind.FIRMWARE], by_kind[Kind.FIRMWARE_IMAGE], manifest)
    reasons += _hardware(by_kind[Kind.FIRMWARE], manifest)
    reasons += _scripts(by_kind[Kind.SCRIPT], manifest)
    reasons += _params(by_kind[Kind.PARAMS], manifest)
    reasons += _components(by_kind[Kind.COMPONENT], manifest)
    reasons += _posture(by_kind[Kind.POSTURE], manifest)
    return Verdict.from_reasons(reasons)


def _posture(measured: list[Measurement], manifest: Manifest) -> list[Reason]:
    """Link posture (ADR 0014): a stopped gate fails whatever the manifest says; signing and the
    script checksums fail where the manifest requires them."""
    need = manifest.posture
    if not measured:
        required = need is not None and (need.signed or need.script_checksums)
        return [Reason(Code.MEASUREMENT_MISSING, "the link posture was not measured", "fc.link")] if required else []
    m = measured[0]
    out = []
    if m.claims.get("gate_stopped") is True:
        out.append(Reason(Code.POSTURE_GATE_STOPPED, "the FC said 'Scripting: stopped': the arming gate no longer "
                          "takes verdicts (ArduPilot's script checksums refuse arming; reboot the FC)", m.component))
    if m.claims.get("arm_authorization") is False:
        out.append(Reason(Code.POSTURE_ARM_AUTH_OFF, "PX4 no longer asks this agent before arming (COM_ARM_AUTH_REQ "
                          "not 1, or COM_ARM_AUTH_ID not the agent's system id): `flightseal gate install`",
                          m.component))
    if m.claims.get("gate_answers") is False:
        out.append(Reason(Code.POSTURE_GATE_SILENT, "the arming gate did not answer the agent's last verdict, so no "
                          "verdict is known to be enforced (gate removed, stopped, without this agent's key, or the "
                          "link dropping its answers)", m.component))
    forgeries = m.claims.get("gate_forgeries")
    if isinstance(forgeries, int) and not isinstance(forgeries, bool) and forgeries > 0:
        out.append(Reason(Code.POSTURE_GATE_FORGERY, f"{forgeries} verdict(s) or ack(s) in the agent's or the gate's "
                          "name were not made with the gate key: something else on the channel speaks for them "
                          "(a router's client?); find it, then reboot the FC", m.component))
    if need is not None and need.signed and m.claims.get("signed") is not True:
        out.append(Reason(Code.POSTURE_UNSIGNED, "the agent's link to the FC is not MAVLink2-signed, so any link may "
                          "set parameters (`flightseal signing setup`)", m.component))
    if need is not None and need.script_checksums and m.claims.get("script_checksums") is not True:
        out.append(Reason(Code.POSTURE_SCRIPT_CHECKSUMS, "ArduPilot's script checksums are off (SCR_LD_CHECKSUM or "
                          "SCR_RUN_CHECKSUM -1, SCR_DEBUG_OPTS bit 4, or scripting off): `flightseal gate install`",
                          m.component))
    return out


def _strength(measurements: Iterable[Measurement], manifest: Manifest) -> list[Reason]:
    out = []
    for m in measurements:
        need = manifest.min_strength.get(m.kind)
        if need is not None and m.strength < need:
            out.append(Reason(Code.MEASUREMENT_TOO_WEAK,
                              f"measured as {m.strength.label} ({m.source}); policy needs {need.label}",
                              m.component))
    return out


def _claim(m: Measurement, name: str) -> str:
    value = m.claims.get(name, "")
    return str(value)


def _firmware(identity: list[Measurement], images: list[Measurement], manifest: Manifest) -> list[Reason]:
    if not identity:
        return [Reason(Code.MEASUREMENT_MISSING, "FC firmware identity was not measured", "fc.firmware")]
    out: list[Reason] = []
    ident = identity[0]
    git_hash = _claim(ident, "git_hash")
    board_id = ident.claims.get("board_id")
    candidates = [f for f in manifest.firmware
                  if f.git_hash == git_hash and (board_id is None or f.board_id == board_id)]
    if not candidates:
        out.append(Reason(Code.FIRMWARE_MISMATCH,
                          f"firmware {_claim(ident, 'version')} ({git_hash or 'no git hash'}) board "
                          f"{board_id} is not approved", ident.component))
        return out
    matched: Firmware | None = candidates[0]
    digests_required = [f for f in candidates if f.sha256]
    if digests_required:
        if not images:
            out.append(Reason(Code.MEASUREMENT_MISSING, "firmware image digest was not measured",
                              "fc.firmware-image"))
            matched = None
        else:
            image = images[0]
            sha = image.digests.get("sha256")
            hit = [f for f in digests_required if f.sha256 == sha]
            if not hit:
                out.append(Reason(Code.FIRMWARE_MISMATCH,
                                  f"image sha256 {str(sha)[:16]}… matches no approved image for {git_hash}",
                                  image.component))
                matched = None
            else:
                matched = hit[0]
    if matched is not None and matched.release < manifest.firmware_min_release:
        out.append(Reason(Code.FIRMWARE_ROLLBACK,
                          f"release {matched.release} is below the minimum {manifest.firmware_min_release}",
                          ident.component))
    return out


def _hardware(identity: list[Measurement], manifest: Manifest) -> list[Reason]:
    if not identity:
        return []
    ident = identity[0]
    binding = manifest.airframe
    out = []
    if binding.board_ids and ident.claims.get("board_id") not in binding.board_ids:
        out.append(Reason(Code.WRONG_HARDWARE, f"board id {ident.claims.get('board_id')} is not bound to "
                          f"airframe {binding.model}", ident.component))
    if binding.fc_uids and _claim(ident, "uid") not in binding.fc_uids:
        out.append(Reason(Code.WRONG_HARDWARE, f"FC uid {_claim(ident, 'uid') or '(none)'} is not bound to "
                          f"airframe {binding.model}", ident.component))
    return out


def _scripts(scripts: list[Measurement], manifest: Manifest) -> list[Reason]:
    out = []
    approved = {s.path: s for s in manifest.scripts}
    seen = set()
    for m in scripts:
        path = _claim(m, "path") or m.component.removeprefix("fc.script:")
        seen.add(path)
        entry = approved.get(path)
        if entry is None:
            if not manifest.allow_unlisted_scripts:
                out.append(Reason(Code.SCRIPT_UNKNOWN, f"script {path} is not approved", m.component))
        elif m.digests.get("sha256") != entry.sha256:
            out.append(Reason(Code.SCRIPT_MISMATCH, f"script {path} differs from the approved one", m.component))
    for path, entry in approved.items():
        if entry.required and path not in seen:
            out.append(Reason(Code.MEASUREMENT_MISSING, f"required script {path} is not on the FC",
                              f"fc.script:{path}"))
    return out


def _params(measured: list[Measurement], manifest: Manifest) -> list[Reason]:
    policy = manifest.params
    approved_digest = policy.approved_digest
    if not policy.pinned and approved_digest is None:
        return []
    if not measured:
        return [Reason(Code.MEASUREMENT_MISSING, "FC parameters were not measured", "fc.params")]
    m = measured[0]
    claimed = param_claims(m)
    out = [r for name, want in sorted(policy.pinned.items()) if (r := _pinned(name, want, claimed)) is not None]
    if approved_digest is None:
        return out
    if m.claims.get("exclude") != ",".join(policy.exclude):
        return [*out, Reason(Code.PARAM_MISMATCH, "parameter digest was computed with other exclusions", m.component)]
    if policy.values:  # checked even when the digest matches: a measurement must not contradict itself
        return out + _named_differences(m, claimed, policy.values, policy.exclude, set(policy.pinned))
    if m.digests.get("sha256") != approved_digest:
        out.append(Reason(Code.PARAM_MISMATCH, "parameter set differs from the approved set", m.component))
    return out


def param_claims(m: Measurement) -> dict[str, float | None]:
    """The parameter values a measurement names (``param.NAME``); ``None``: the FC lacks it."""
    out: dict[str, float | None] = {}
    for key, value in m.claims.items():
        if key.startswith("param.") and not isinstance(value, bool):
            out[key[6:]] = None if isinstance(value, str) else float(value)
    return out


def _pinned(name: str, want: float, claimed: dict[str, float | None]) -> Reason | None:
    got = claimed.get(name)
    where = PARAM_COMPONENT_PREFIX + name
    if got is None:
        return Reason(Code.PARAM_PINNED, f"pinned parameter {name} is absent", where)
    if not paramdigest.same_value(got, want):
        return Reason(Code.PARAM_PINNED, f"{name} is {paramdigest.canonical_value(got)}, pinned to "
                      f"{paramdigest.canonical_value(want)}", where)
    return None


def _named_differences(m: Measurement, claimed: dict[str, float | None], approved: dict[str, float],
                       exclude: tuple[str, ...], pinned: set[str]) -> list[Reason]:
    """One reason per parameter that differs, checked against the measured digest (ADR 0010).

    The approved values with the named changes applied must hash to the measured digest; if they
    do, the names are every difference there is. If not, the measurement left some out (too many
    to name, or made without the approved values) and a reason says so.
    """
    full = m.claims.get("count") == len(claimed) and None not in claimed.values()
    changes = paramdigest.included({n: v for n, v in claimed.items() if v is not None} if full else {}, exclude)
    rebuilt = changes if full else paramdigest.apply(approved, {n: v for n, v in claimed.items()
                                                               if not paramdigest.is_excluded(n, exclude)})
    named = paramdigest.differences(approved, rebuilt, exclude)
    unpinned = [(name, got) for name, got in named.items() if name not in pinned]  # pins: param-pinned
    bound = LIMITS.max_named_param_differences
    out = []
    for name, got in unpinned[:bound]:
        want = approved.get(name)
        if got is None:
            detail = f"{name} is absent on the FC, approved {paramdigest.canonical_value(approved[name])}"
        elif want is None:
            detail = f"{name} is {paramdigest.canonical_value(got)}, not in the approved set"
        else:
            detail = f"{name} is {paramdigest.canonical_value(got)}, approved {paramdigest.canonical_value(want)}"
        out.append(Reason(Code.PARAM_MISMATCH, detail, PARAM_COMPONENT_PREFIX + name))
    if len(unpinned) > bound:
        out.append(Reason(Code.PARAM_MISMATCH, f"and {len(unpinned) - bound} more parameters differ", m.component))
    if paramdigest.digest(rebuilt, exclude) != m.digests.get("sha256"):
        total = m.claims.get("differ")
        more = f" ({total} differ in all)" if isinstance(total, int) and not isinstance(total, bool) else ""
        out.append(Reason(Code.PARAM_MISMATCH, "parameter set differs from the approved set in parameters the "
                          f"measurement does not name{more}", m.component))
    return out


def _match(m: Measurement, entries: Iterable[ApprovedComponent]) -> ApprovedComponent | None:
    hw = _claim(m, "hardware_id")
    for entry in entries:
        if not fnmatch.fnmatchcase(m.component, entry.selector):
            continue
        if entry.hardware_ids and hw not in entry.hardware_ids:
            continue
        return entry
    return None


def _components(components: list[Measurement], manifest: Manifest) -> list[Reason]:
    out = []
    for m in components:
        vendor, origin = _claim(m, "vendor"), _claim(m, "origin")
        if vendor and vendor in manifest.deny_vendors:
            out.append(Reason(Code.COMPONENT_DENIED_VENDOR, f"vendor {vendor} is denied", m.component))
            continue
        if origin and origin in manifest.deny_origins:
            out.append(Reason(Code.COMPONENT_DENIED_ORIGIN, f"origin {origin} is denied", m.component))
            continue
        entry = _match(m, manifest.components)
        if entry is None:
            out.append(Reason(Code.COMPONENT_UNKNOWN, f"{_describe(m)} is not an approved part", m.component))
            continue
        if entry.vendor in manifest.deny_vendors:
            out.append(Reason(Code.COMPONENT_DENIED_VENDOR, f"{entry.name}: vendor {entry.vendor} is denied",
                              m.component))
        elif entry.origin in manifest.deny_origins:
            out.append(Reason(Code.COMPONENT_DENIED_ORIGIN, f"{entry.name}: origin {entry.origin} is denied",
                              m.component))
        elif (vendor and vendor != entry.vendor) or (_claim(m, "model") and _claim(m, "model") != entry.model):
            out.append(Reason(Code.COMPONENT_MISMATCH, f"reports {vendor} {_claim(m, 'model')}, approved as "
                              f"{entry.vendor} {entry.model}", m.component))
        elif entry.firmware_sha256 and m.digests.get("sha256") not in entry.firmware_sha256:
            out.append(Reason(Code.COMPONENT_MISMATCH, f"{entry.name}: firmware is not an approved build",
                              m.component))
        elif entry.firmware_crc64 and m.digests.get("crc64") not in entry.firmware_crc64:
            got = m.digests.get("crc64")
            out.append(Reason(Code.COMPONENT_MISMATCH, f"{entry.name}: firmware image CRC "
                              f"{got if got else '(not reported)'} is not an approved build", m.component))
    return out


def _describe(m: Measurement) -> str:
    parts = [_claim(m, "vendor"), _claim(m, "model"), _claim(m, "type")]
    label = " ".join(p for p in parts if p)
    return f"{m.component} ({label})" if label else m.component
