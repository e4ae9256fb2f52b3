"""A buyer's procurement policy, and the findings of one airframe's bill against it (issue 15, ADR 0023).

The policy is the buyer's document, apart from the manufacturer's manifest:

- It is a DSSE envelope of its own payload type, signed by the buyer's key(s). The buyer pins
  those keys themselves (``--policy-key``); the manufacturer's root has no say over it.
- A policy that is not signed by a threshold of the pinned keys, or does not parse, is unusable
  input (:class:`PolicyError`, exit 2): vetting never runs on a policy it cannot trust.
- It can require every listed critical class to be present *and measured*; deny origins (a part's
  and its main chip's); set a minimum measurement strength per class; allow or deny vendors.
- Judging a bill gives every finding at once, each with a stable :class:`FindingCode`; a bill
  whose offline verification failed gives ``attestation-failed`` findings too: a buyer is never
  told a part's origin passes on evidence that did not verify.
- A part whose origin is unknown cannot be cleared by a deny list: ``origin-unknown``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attest import dsse, jsonio
from attest.bom import Bill, Entry
from attest.errors import FlightSealError, FormatError
from attest.keys import PublicKey
from attest.manifest import COMPONENT_CLASSES, component_class
from attest.models import Strength

POLICY_TYPE = "flightseal/buyer-policy"
POLICY_PAYLOAD_TYPE = "application/vnd.flightseal.buyer-policy+json"
MAX_POLICY_BYTES = 256 * 1024
CRITICAL_CLASSES: tuple[str, ...] = tuple(c for c in COMPONENT_CLASSES if c != "other")
_W = "policy"


class PolicyError(FormatError):
    """The policy cannot be used: malformed, or not signed by the keys the buyer pinned.

    It is a :class:`FormatError` on purpose: the policy is the buyer's own input, so a bad one is
    unusable input (exit 2), never a finding about the airframe."""


class FindingCode(enum.StrEnum):
    """Stable finding codes, parsed by buyers' tools: append only, never rename."""

    ATTESTATION_FAILED = "attestation-failed"
    CLASS_MISSING = "class-missing"
    CLASS_NOT_MEASURED = "class-not-measured"
    ORIGIN_DENIED = "origin-denied"
    CHIP_ORIGIN_DENIED = "chip-origin-denied"
    ORIGIN_UNKNOWN = "origin-unknown"
    VENDOR_DENIED = "vendor-denied"
    VENDOR_NOT_ALLOWED = "vendor-not-allowed"
    STRENGTH_TOO_WEAK = "strength-too-weak"


@dataclass(frozen=True)
class Finding:
    code: FindingCode
    detail: str
    component: str = ""

    def to_json(self) -> dict[str, str]:
        return {"code": self.code.value, "component": self.component, "detail": self.detail}

    def __str__(self) -> str:
        where = f" [{self.component}]" if self.component else ""
        return f"{self.code.value}{where}: {self.detail}"


@dataclass(frozen=True)
class BuyerPolicy:
    name: str
    version: int = 1
    require_classes: tuple[str, ...] = ()
    deny_origins: tuple[str, ...] = ()
    min_strength: Mapping[str, Strength] = field(default_factory=dict)
    allow_vendors: tuple[str, ...] = ()  # empty: any vendor not denied
    deny_vendors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"_type": POLICY_TYPE, "name": self.name, "version": self.version,
                "require_classes": list(self.require_classes), "deny_origins": list(self.deny_origins),
                "min_strength": {k: v.label for k, v in sorted(self.min_strength.items())},
                "allow_vendors": list(self.allow_vendors), "deny_vendors": list(self.deny_vendors)}

    @classmethod
    def from_json(cls, data: Any) -> BuyerPolicy:
        o = jsonio.expect_object(data, _W, {"_type", "name"}, {"version", "require_classes", "deny_origins",
                                                               "min_strength", "allow_vendors", "deny_vendors"})
        if o["_type"] != POLICY_TYPE:
            raise FormatError(_W, f"_type is {o['_type']!r}, expected {POLICY_TYPE!r}", "_type")
        strengths = jsonio.expect_object(o.get("min_strength", {}), _W, set(), set(COMPONENT_CLASSES),
                                         "min_strength")
        min_strength = {}
        for cls_name, label in strengths.items():
            try:
                min_strength[cls_name] = Strength.parse(jsonio.expect_str(label, _W, f"min_strength.{cls_name}", 64))
            except FormatError as exc:
                raise FormatError(_W, exc.detail, f"min_strength.{cls_name}") from None
        origins = tuple(jsonio.expect_str_list(o.get("deny_origins", []), _W, "deny_origins", 256))
        bad = [x for x in origins if len(x) != 2 or not x.isascii() or not x.isupper()]
        if bad:
            raise FormatError(_W, f"{bad[0]!r} is not an ISO 3166-1 alpha-2 code", "deny_origins")
        return cls(
            name=jsonio.expect_str(o["name"], _W, "name", 128),
            version=jsonio.expect_int(o.get("version", 1), _W, "version", 1),
            require_classes=tuple(component_class(c, f"require_classes[{i}]") for i, c in enumerate(
                jsonio.expect_list(o.get("require_classes", []), _W, "require_classes", len(COMPONENT_CLASSES)))),
            deny_origins=origins,
            min_strength=min_strength,
            allow_vendors=tuple(jsonio.expect_str_list(o.get("allow_vendors", []), _W, "allow_vendors", 256)),
            deny_vendors=tuple(jsonio.expect_str_list(o.get("deny_vendors", []), _W, "deny_vendors", 256)),
        )


def load_policy(data: bytes, keys: Mapping[str, PublicKey], threshold: int = 1) -> tuple[BuyerPolicy, set[str]]:
    """The policy in ``data`` if a threshold of the pinned ``keys`` signed it, with the key ids that did.

    Raises:
        PolicyError: not an envelope, not a policy, unsigned, signed by other keys, altered, malformed.
    """
    try:
        env = dsse.Envelope.from_bytes(data, _W, MAX_POLICY_BYTES)
        if env.payload_type != POLICY_PAYLOAD_TYPE:
            raise FormatError(_W, f"payload type {env.payload_type!r} is not a buyer policy ({POLICY_PAYLOAD_TYPE})")
        signers = dsse.verify(env, POLICY_PAYLOAD_TYPE, keys, threshold, _W)
        return BuyerPolicy.from_json(env.payload_json(_W, MAX_POLICY_BYTES)), signers
    except FormatError as exc:
        raise PolicyError(_W, exc.detail, exc.field) from None
    except FlightSealError as exc:
        pinned = ", ".join(k[:16] + "…" for k in keys) or "none"
        raise PolicyError(_W, f"not signed by the pinned policy key(s) {pinned}, or altered since ({exc})") from None


def evaluate(policy: BuyerPolicy, bill: Bill) -> tuple[Finding, ...]:
    """Every finding of ``bill`` against ``policy``; empty: the airframe meets the policy."""
    out = [Finding(FindingCode.ATTESTATION_FAILED, f"offline verification failed: {r}", r.component)
           for r in bill.verification]
    for wanted in policy.require_classes:
        parts = bill.of_class(wanted)
        if not parts:
            out.append(Finding(FindingCode.CLASS_MISSING, f"no {wanted} is listed or measured", wanted))
        elif not any(e.measured for e in parts):
            out.append(Finding(FindingCode.CLASS_NOT_MEASURED, f"the {wanted} is declared by the manufacturer "
                               "but no measurement backs it", wanted))
    for e in bill.entries:
        out += _origin(policy, e) + _vendor(policy, e) + _strength(policy, e)
    return tuple(out)


def _origin(policy: BuyerPolicy, e: Entry) -> list[Finding]:
    if not policy.deny_origins or e.part_class not in CRITICAL_CLASSES:
        return []
    out = []
    if e.origin in policy.deny_origins:
        out.append(Finding(FindingCode.ORIGIN_DENIED, f"{_what(e)}: origin {e.origin} is denied", e.ref))
    elif not e.origin and e.kind in ("part", "hardware"):
        out.append(Finding(FindingCode.ORIGIN_UNKNOWN, f"{_what(e)}: no origin is declared, so the "
                           "deny list cannot clear it", e.ref))
    chip = e.supplier.chip_origin if e.supplier else ""
    if chip and chip in policy.deny_origins:
        out.append(Finding(FindingCode.CHIP_ORIGIN_DENIED, f"{_what(e)}: main chip origin {chip} "
                           "is denied", e.ref))
    return out


def _vendor(policy: BuyerPolicy, e: Entry) -> list[Finding]:
    if not e.vendor:
        return []
    if e.vendor in policy.deny_vendors:
        return [Finding(FindingCode.VENDOR_DENIED, f"{_what(e)}: vendor {e.vendor} is denied", e.ref)]
    if policy.allow_vendors and e.vendor not in policy.allow_vendors:
        return [Finding(FindingCode.VENDOR_NOT_ALLOWED, f"{_what(e)}: vendor {e.vendor} is not on "
                        "the allowed list", e.ref)]
    return []


def _strength(policy: BuyerPolicy, e: Entry) -> list[Finding]:
    need = policy.min_strength.get(e.part_class)
    if need is None or (e.strength is not None and e.strength >= need):
        return []
    return [Finding(FindingCode.STRENGTH_TOO_WEAK, f"{_what(e)} is only {e.how}; the policy needs {need.label}",
                    e.ref)]


def _what(e: Entry) -> str:
    return f"{e.name} ({e.part_class})"
