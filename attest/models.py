"""Value types shared by every layer: measurements, reasons and verdicts.

They are frozen dataclasses so a measurement cannot change between being appraised and being
sealed, and they convert to and from plain JSON so the same values travel in the evidence.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attest.errors import FormatError
from attest.limits import LIMITS

ClaimValue = str | int | float | bool

_HEX = re.compile(r"^[0-9a-f]+$")
# crc64 is DroneCAN's firmware image CRC (CRC-64-WE), the only image identity a DroneCAN node reports;
# like crc32 it names a build, it does not resist a forger.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128, "crc32": 8, "crc64": 16}


class Strength(enum.IntEnum):
    """How much a measurement can be trusted, by where it came from (higher is stronger).

    The order follows ARCHITECTURE.md: bytes read from flash beat a companion-side image checked
    through the bootloader, which beats what the firmware says about itself.
    """

    OBSERVED = 0  # seen on the bus (a heartbeat, a node status): presence only
    SELF_REPORTED = 1  # what the firmware says about itself (AUTOPILOT_VERSION, FTP listing)
    IMAGE_AND_BOOTLOADER = 2  # companion image file plus bootloader flash CRC / on-host file
    FLASH_READ = 3  # bytes read back from the FC's program flash (@SYS/flash.bin)

    @classmethod
    def parse(cls, value: str) -> Strength:
        try:
            return cls[value.upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise FormatError("strength", f"unknown strength {value!r} (one of: {names})") from None

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Kind(enum.StrEnum):
    """What a measurement is of; the appraisal has one rule per kind."""

    FIRMWARE = "firmware"  # FC firmware identity (version, git hash, board id, uid)
    FIRMWARE_IMAGE = "firmware-image"  # digest of the FC firmware image bytes
    SCRIPT = "script"  # a Lua script on the FC
    PARAMS = "params"  # the FC parameter set
    COMPONENT = "component"  # another MAVLink / DroneCAN component, or a part
    COMPANION = "companion"  # the agent's own software and the companion OS
    POSTURE = "posture"  # how the FC's links and the gate are protected, as the agent sees them


@dataclass(frozen=True)
class Measurement:
    """One thing measured on the airframe, with where it came from and how far to trust it."""

    component: str
    kind: Kind
    digests: Mapping[str, str]
    source: str
    strength: Strength
    claims: Mapping[str, ClaimValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for alg, value in self.digests.items():
            want = DIGEST_ALGORITHMS.get(alg)
            if want is None:
                raise FormatError("measurement", f"unknown digest algorithm {alg!r}", self.component)
            if len(value) != want or not _HEX.match(value):
                raise FormatError("measurement", f"{alg} digest is not {want} lower-case hex", self.component)
        bound = LIMITS.max_param_claims if self.kind is Kind.PARAMS else LIMITS.max_claims
        if len(self.claims) > bound:
            raise FormatError("measurement", f"more than {bound} claims", self.component)

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "kind": self.kind.value,
            "digests": dict(sorted(self.digests.items())),
            "source": self.source,
            "strength": self.strength.label,
            "claims": dict(sorted(self.claims.items())),
        }

    @classmethod
    def from_json(cls, data: Any) -> Measurement:
        from attest import jsonio

        obj = jsonio.expect_object(data, "measurement", {"component", "kind", "digests", "source", "strength"},
                                   {"claims"})
        component = jsonio.expect_str(obj["component"], "measurement", "component")
        try:
            kind = Kind(obj["kind"])
        except ValueError:
            raise FormatError("measurement", f"unknown kind {obj['kind']!r}", "kind") from None
        digests = jsonio.expect_str_map(obj["digests"], "measurement", "digests")
        claims_raw = obj.get("claims", {})
        if not isinstance(claims_raw, dict):
            raise FormatError("measurement", "must be an object", "claims")
        claims: dict[str, ClaimValue] = {}
        for k, v in claims_raw.items():
            if not isinstance(v, str | int | float | bool):
                raise FormatError("measurement", "claim values must be scalars", f"claims.{k}")
            claims[str(k)] = v
        return cls(
            component=component,
            kind=kind,
            digests=digests,
            source=jsonio.expect_str(obj["source"], "measurement", "source"),
            strength=Strength.parse(jsonio.expect_str(obj["strength"], "measurement", "strength")),
            claims=claims,
        )


class Code(enum.StrEnum):
    """Stable reason codes. They are shown to pilots and parsed by machines: never rename one."""

    FIRMWARE_MISMATCH = "firmware-mismatch"
    FIRMWARE_ROLLBACK = "firmware-rollback"
    SCRIPT_UNKNOWN = "script-unknown"
    SCRIPT_MISMATCH = "script-mismatch"
    PARAM_MISMATCH = "param-mismatch"
    COMPONENT_UNKNOWN = "component-unknown"
    COMPONENT_MISMATCH = "component-mismatch"
    COMPONENT_DENIED_ORIGIN = "component-denied-origin"
    COMPONENT_DENIED_VENDOR = "component-denied-vendor"
    WRONG_HARDWARE = "wrong-hardware"
    MANIFEST_EXPIRED = "manifest-expired"
    MANIFEST_ROLLBACK = "manifest-rollback"
    MANIFEST_THRESHOLD = "manifest-threshold"
    MANIFEST_SIGNATURE = "manifest-signature"
    MANIFEST_INVALID = "manifest-invalid"
    MEASUREMENT_MISSING = "measurement-missing"
    REATTESTING = "re-attesting"  # only ever sent to the gate: something changed and a pass is running
    MEASUREMENT_TOO_WEAK = "measurement-too-weak"
    # verifier-side codes
    ENVELOPE_INVALID = "envelope-invalid"
    ENVELOPE_SIGNATURE = "envelope-signature"
    DEVICE_UNKNOWN = "device-unknown"
    WRONG_DEVICE = "wrong-device"
    NONCE_MISMATCH = "nonce-mismatch"
    ATTESTATION_STALE = "attestation-stale"
    ATTESTATION_FUTURE = "attestation-from-future"
    SOFTWARE_KEY = "software-key"
    MANIFEST_REFERENCE = "manifest-reference"
    VERDICT_DISAGREES = "verdict-disagrees"
    QUOTE_INVALID = "quote-invalid"
    QUOTE_MISSING = "quote-missing"
    # TPM quote checks, one code per failed property (attest/quote.py)
    QUOTE_SIGNATURE = "quote-signature"
    QUOTE_QUALIFYING_DATA = "quote-qualifying-data"
    QUOTE_CLOCK_UNSAFE = "quote-clock-unsafe"
    QUOTE_COUNTER_ROLLBACK = "quote-counter-rollback"
    QUOTE_PCR_SELECTION = "quote-pcr-selection"
    QUOTE_PCR_DIGEST = "quote-pcr-digest"
    QUOTE_EVENT_LOG = "quote-event-log"
    AGENT_PCR_HISTORY = "agent-pcr-history"
    # a pinned parameter (the manifest's named safety values) differs; param-mismatch is the rest of the set
    PARAM_PINNED = "param-pinned"
    # link posture (ADR 0014): what keeps the gate enforced
    POSTURE_UNSIGNED = "posture-unsigned"
    POSTURE_SCRIPT_CHECKSUMS = "posture-script-checksums"
    POSTURE_GATE_STOPPED = "posture-gate-stopped"
    POSTURE_GATE_FORGERY = "posture-gate-forgery"
    POSTURE_GATE_SILENT = "posture-gate-silent"
    # a device enrolled as tpm without proof that its key is in a certified TPM (ADR 0018)
    DEVICE_TPM_UNPROVEN = "device-tpm-unproven"
    # the companion's boot against the manifest's golden values (ADR 0019, attest/boot.py)
    COMPANION_BOOT_LOG_MISSING = "companion-boot-log-missing"
    COMPANION_BOOT_LOG_INVALID = "companion-boot-log-invalid"
    COMPANION_BOOT_LOG_MISMATCH = "companion-boot-log-mismatch"
    COMPANION_BOOT_UNKNOWN = "companion-boot-unknown"
    COMPANION_BOOT_STAGE_MISSING = "companion-boot-stage-missing"
    # PX4 (ADR 0024): the FC no longer asks this agent before arming (COM_ARM_AUTH_* changed)
    POSTURE_ARM_AUTH_OFF = "posture-arm-auth-off"


PILOT_TEXT_MAX = 42
PILOT_PREFIX = "FlightSeal: "
PARAM_COMPONENT_PREFIX = "fc.param:"  # a reason about one parameter names it in its component
_PARAM_PILOT = {"param-mismatch": "param", "param-pinned": "pinned"}


@dataclass(frozen=True)
class Reason:
    """One failure: a stable code, the component it is about, and a human explanation."""

    code: Code
    detail: str
    component: str = ""

    @property
    def pilot_text(self) -> str:
        """The ≤ 42-character text ArduPilot shows as ``PreArm: …``.

        A parameter reason names the parameter (``FlightSeal: param FS_THR_ENABLE``): a pilot can
        fix a name, not a code. ArduPilot names are at most 16 characters, so it always fits.
        """
        word = _PARAM_PILOT.get(self.code.value)
        if word is not None and self.component.startswith(PARAM_COMPONENT_PREFIX):
            return f"{PILOT_PREFIX}{word} {self.component.removeprefix(PARAM_COMPONENT_PREFIX)}"[:PILOT_TEXT_MAX]
        return (PILOT_PREFIX + self.code.value)[:PILOT_TEXT_MAX]

    def to_json(self) -> dict[str, str]:
        return {"code": self.code.value, "component": self.component, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Any) -> Reason:
        from attest import jsonio

        obj = jsonio.expect_object(data, "reason", {"code", "detail"}, {"component"})
        try:
            code = Code(obj["code"])
        except ValueError:
            raise FormatError("reason", f"unknown code {obj['code']!r}", "code") from None
        return cls(code, jsonio.expect_str(obj["detail"], "reason", "detail"),
                   jsonio.expect_str(obj.get("component", ""), "reason", "component"))

    def __str__(self) -> str:
        where = f" [{self.component}]" if self.component else ""
        return f"{self.code.value}{where}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    """Pass or fail, with every reason. A verdict with no reasons and ``passed=False`` cannot exist."""

    passed: bool
    reasons: tuple[Reason, ...] = ()

    def __post_init__(self) -> None:
        if self.passed and self.reasons:
            raise ValueError("a passing verdict cannot carry failure reasons")
        if not self.passed and not self.reasons:
            raise ValueError("a failing verdict must name at least one reason")

    @classmethod
    def from_reasons(cls, reasons: list[Reason] | tuple[Reason, ...]) -> Verdict:
        return cls(passed=not reasons, reasons=tuple(reasons))

    @property
    def codes(self) -> tuple[Code, ...]:
        return tuple(r.code for r in self.reasons)

    @property
    def pilot_text(self) -> str:
        return self.reasons[0].pilot_text if self.reasons else "FlightSeal: pass"

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": [r.to_json() for r in self.reasons]}

    @classmethod
    def from_json(cls, data: Any) -> Verdict:
        from attest import jsonio

        obj = jsonio.expect_object(data, "verdict", {"passed", "reasons"})
        if not isinstance(obj["passed"], bool):
            raise FormatError("verdict", "must be true or false", "passed")
        reasons = jsonio.expect_list(obj["reasons"], "verdict", "reasons", LIMITS.max_reasons)
        try:
            return cls(obj["passed"], tuple(Reason.from_json(r) for r in reasons))
        except ValueError as exc:
            raise FormatError("verdict", str(exc)) from None
