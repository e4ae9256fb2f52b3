"""The supply-chain manifest: what is approved for one airframe type.

It is the ``manifest`` role's signed content (TUF's targets role, specialised): approved FC
firmware with release counters, Lua scripts, a parameter policy, approved parts with their
vendor and country of origin (and, for the bill of materials, their critical-component class,
supplier chain and supporting documents: ADR 0023), deny rules, the airframe binding, and the minimum measurement
strength per kind, and the golden values of the companion computer's boot (``companion.boot``,
ADR 0019). Parsing is strict (closed schema, bounded sizes) because this document
decides whether a drone may arm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attest import jsonio, params, timeutil
from attest.errors import FormatError
from attest.models import Kind, Strength

MANIFEST_TYPE = "flightseal/manifest"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_W = "manifest"


def _sha256(value: Any, field: str) -> str:
    text = jsonio.expect_str(value, _W, field, 64)
    if not _SHA256.match(text):
        raise FormatError(_W, "must be 64 lower-case hex digits (SHA-256)", field)
    return text


def _crc64(value: Any, field: str) -> str:
    text = jsonio.expect_str(value, _W, field, 16)
    if len(text) != 16 or not _HEX.match(text):
        raise FormatError(_W, "must be 16 lower-case hex digits (a DroneCAN image CRC)", field)
    return text


@dataclass(frozen=True)
class Firmware:
    name: str
    version: str
    git_hash: str
    board_id: int
    release: int
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "git_hash": self.git_hash,
                               "board_id": self.board_id, "release": self.release}
        if self.sha256:
            out["sha256"] = self.sha256
        return out

    @classmethod
    def from_json(cls, data: Any, f: str) -> Firmware:
        o = jsonio.expect_object(data, _W, {"name", "version", "git_hash", "board_id", "release"}, {"sha256"}, f)
        return cls(
            name=jsonio.expect_str(o["name"], _W, f"{f}.name", 128),
            version=jsonio.expect_str(o["version"], _W, f"{f}.version", 64),
            git_hash=jsonio.expect_str(o["git_hash"], _W, f"{f}.git_hash", 64),
            board_id=jsonio.expect_int(o["board_id"], _W, f"{f}.board_id", 0, 2**32 - 1),
            release=jsonio.expect_int(o["release"], _W, f"{f}.release", 0),
            sha256=_sha256(o["sha256"], f"{f}.sha256") if "sha256" in o else None,
        )


@dataclass(frozen=True)
class Script:
    path: str
    sha256: str
    required: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "required": self.required}

    @classmethod
    def from_json(cls, data: Any, f: str) -> Script:
        o = jsonio.expect_object(data, _W, {"path", "sha256"}, {"required"}, f)
        return cls(jsonio.expect_str(o["path"], _W, f"{f}.path", 256), _sha256(o["sha256"], f"{f}.sha256"),
                   jsonio.expect_bool(o.get("required", False), _W, f"{f}.required"))


def _param_map(raw: Any, field: str, bound: int) -> dict[str, float]:
    if not isinstance(raw, dict) or len(raw) > bound:
        raise FormatError(_W, f"must be an object of at most {bound} parameters", field)
    out = {str(k): jsonio.expect_number(v, _W, f"{field}.{k}") for k, v in raw.items()}
    for name in out:
        if not 1 <= len(name) <= 16:
            raise FormatError(_W, "parameter names are 1 to 16 characters", f"{field}.{name}")
    return out


@dataclass(frozen=True)
class ParamPolicy:
    """What the FC's parameters must be.

    ``pinned`` values are checked one by one (the safety values the gate's life depends on).
    The rest of the set is approved either as ``values`` (every covered parameter, so a
    mismatch names each parameter that changed: ADR 0010) or, in manifests made before that,
    as a bare ``digest``, which can only say that something changed.
    """

    pinned: dict[str, float] = field(default_factory=dict)
    digest: str | None = None
    exclude: tuple[str, ...] = params.DEFAULT_EXCLUSIONS
    values: dict[str, float] = field(default_factory=dict)

    @property
    def approved_digest(self) -> str | None:
        """The digest the measured set must have, if the set is approved at all."""
        if self.values:
            return params.digest(self.values, self.exclude)
        return self.digest

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pinned": dict(sorted(self.pinned.items())), "exclude": list(self.exclude)}
        if self.digest:
            out["sha256"] = self.digest
        if self.values:  # absent when unused: manifests signed before it existed keep their bytes
            out["values"] = dict(sorted(self.values.items()))
        return out

    @classmethod
    def from_json(cls, data: Any) -> ParamPolicy:
        o = jsonio.expect_object(data, _W, set(), {"pinned", "sha256", "exclude", "values"}, "params")
        policy = cls(
            pinned=_param_map(o.get("pinned", {}), "params.pinned", 4096),
            digest=_sha256(o["sha256"], "params.sha256") if "sha256" in o else None,
            exclude=tuple(jsonio.expect_str_list(o.get("exclude", list(params.DEFAULT_EXCLUSIONS)), _W,
                                                 "params.exclude", 256)),
            values=_param_map(o.get("values", {}), "params.values", 8192),
        )
        if policy.values:
            covered = params.included(policy.values, policy.exclude)
            if len(covered) != len(policy.values):
                extra = sorted(set(policy.values) - set(covered))[:3]
                raise FormatError(_W, f"approved values include excluded parameters ({', '.join(extra)})",
                                  "params.values")
            if policy.digest and policy.digest != policy.approved_digest:
                raise FormatError(_W, "sha256 is not the digest of the approved values", "params.sha256")
        return policy


# The classes of critical component a buyer asks about (issue 15): NDAA §848's list ("if it can think,
# talk or communicate"), then "other". Extending it means appending here and to the schema's enum.
COMPONENT_CLASSES: tuple[str, ...] = ("flight-controller", "radio", "data-transmission", "camera", "gimbal",
                                      "ground-control-system", "operating-software", "other")
_ORIGIN = re.compile(r"^[A-Z]{2}$")


def _origin(value: Any, field: str) -> str:
    origin = jsonio.expect_str(value, _W, field, 2)
    if not _ORIGIN.match(origin):
        raise FormatError(_W, "must be an ISO 3166-1 alpha-2 country code", field)
    return origin


def component_class(value: Any, field: str) -> str:
    text = jsonio.expect_str(value, _W, field, 64)
    if text not in COMPONENT_CLASSES:
        raise FormatError(_W, f"unknown class {text!r} (one of: {', '.join(COMPONENT_CLASSES)})", field)
    return text


@dataclass(frozen=True)
class Supplier:
    """Who stands behind a part beyond its vendor: the assembler, and where its main chip comes from."""

    assembler: str = ""
    chip_origin: str = ""  # ISO 3166-1 alpha-2 of the main chip (SoC, radio chip, sensor)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("assembler", self.assembler), ("chip_origin", self.chip_origin)) if v}

    @classmethod
    def from_json(cls, data: Any, f: str) -> Supplier:
        o = jsonio.expect_object(data, _W, set(), {"assembler", "chip_origin"}, f)
        return cls(jsonio.expect_str(o.get("assembler", ""), _W, f"{f}.assembler", 128),
                   _origin(o["chip_origin"], f"{f}.chip_origin") if "chip_origin" in o else "")


@dataclass(frozen=True)
class Document:
    """A supporting document (a certificate, a declaration of origin), referenced by its digest only."""

    sha256: str
    title: str

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "title": self.title}

    @classmethod
    def from_json(cls, data: Any, f: str) -> Document:
        o = jsonio.expect_object(data, _W, {"sha256", "title"}, set(), f)
        return cls(_sha256(o["sha256"], f"{f}.sha256"), jsonio.expect_str(o["title"], _W, f"{f}.title", 256))


@dataclass(frozen=True)
class ApprovedComponent:
    """A part allowed on the airframe. ``selector`` is a glob over measured component ids.

    ``part_class``, ``supplier`` and ``documents`` (issue 15) feed the bill of materials; they are
    absent from the JSON when unused, so manifests signed before them keep their bytes. A part
    whose selector matches no measurement (the operator's ground-control software) is declared only.
    """

    name: str
    selector: str
    vendor: str
    model: str
    origin: str
    hardware_ids: tuple[str, ...] = ()
    firmware_sha256: tuple[str, ...] = ()
    firmware_crc64: tuple[str, ...] = ()  # DroneCAN image CRCs (GetNodeInfo software_version.image_crc)
    part_class: str | None = None  # one of COMPONENT_CLASSES; JSON "class"
    supplier: Supplier | None = None
    documents: tuple[Document, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "selector": self.selector, "vendor": self.vendor,
                               "model": self.model, "origin": self.origin, "hardware_ids": list(self.hardware_ids),
                               "firmware_sha256": list(self.firmware_sha256)}
        if self.firmware_crc64:  # absent when unused: manifests signed before it existed keep their bytes
            out["firmware_crc64"] = list(self.firmware_crc64)
        if self.part_class is not None:
            out["class"] = self.part_class
        if self.supplier is not None and self.supplier.to_json():
            out["supplier"] = self.supplier.to_json()
        if self.documents:
            out["documents"] = [d.to_json() for d in self.documents]
        return out

    @classmethod
    def from_json(cls, data: Any, f: str) -> ApprovedComponent:
        o = jsonio.expect_object(data, _W, {"name", "selector", "vendor", "model", "origin"},
                                 {"hardware_ids", "firmware_sha256", "firmware_crc64", "class", "supplier",
                                  "documents"}, f)
        return cls(
            name=jsonio.expect_str(o["name"], _W, f"{f}.name", 128),
            selector=jsonio.expect_str(o["selector"], _W, f"{f}.selector", 128),
            vendor=jsonio.expect_str(o["vendor"], _W, f"{f}.vendor", 128),
            model=jsonio.expect_str(o["model"], _W, f"{f}.model", 128),
            origin=_origin(o["origin"], f"{f}.origin"),
            hardware_ids=tuple(jsonio.expect_str_list(o.get("hardware_ids", []), _W, f"{f}.hardware_ids", 256)),
            firmware_sha256=tuple(_sha256(d, f"{f}.firmware_sha256[{i}]")
                                  for i, d in enumerate(jsonio.expect_list(o.get("firmware_sha256", []), _W,
                                                                           f"{f}.firmware_sha256", 64))),
            firmware_crc64=tuple(_crc64(d, f"{f}.firmware_crc64[{i}]")
                                 for i, d in enumerate(jsonio.expect_list(o.get("firmware_crc64", []), _W,
                                                                          f"{f}.firmware_crc64", 64))),
            part_class=component_class(o["class"], f"{f}.class") if "class" in o else None,
            supplier=Supplier.from_json(o["supplier"], f"{f}.supplier") if "supplier" in o else None,
            documents=tuple(Document.from_json(d, f"{f}.documents[{i}]")
                            for i, d in enumerate(jsonio.expect_list(o.get("documents", []), _W,
                                                                     f"{f}.documents", 32))),
        )


@dataclass(frozen=True)
class Airframe:
    """Which airframes this manifest may be used on. Empty lists do not restrict."""

    model: str
    board_ids: tuple[int, ...] = ()
    fc_uids: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()

    def covers(self, airframe: str, device_id: str) -> bool:
        """Whether a device of this airframe model (and id) may use the manifest at all."""
        return self.model == airframe and (not self.device_ids or device_id in self.device_ids)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "board_ids": list(self.board_ids), "fc_uids": list(self.fc_uids),
                "device_ids": list(self.device_ids)}

    @classmethod
    def from_json(cls, data: Any) -> Airframe:
        o = jsonio.expect_object(data, _W, {"model"}, {"board_ids", "fc_uids", "device_ids"}, "airframe")
        return cls(
            model=jsonio.expect_str(o["model"], _W, "airframe.model", 128),
            board_ids=tuple(jsonio.expect_int(b, _W, f"airframe.board_ids[{i}]", 0, 2**32 - 1)
                            for i, b in enumerate(jsonio.expect_list(o.get("board_ids", []), _W,
                                                                     "airframe.board_ids", 256))),
            fc_uids=tuple(jsonio.expect_str_list(o.get("fc_uids", []), _W, "airframe.fc_uids", 4096)),
            device_ids=tuple(jsonio.expect_str_list(o.get("device_ids", []), _W, "airframe.device_ids", 4096)),
        )


@dataclass(frozen=True)
class Posture:
    """What must protect the FC's links for a pass (ADR 0014). A new manifest requires both; a
    manufacturer may relax one explicitly, and ``manifest show`` and ``verify`` say so."""

    signed: bool = True  # the agent's link to the FC is MAVLink2-signed and the FC signs back
    script_checksums: bool = True  # ArduPilot's script checksums are set and checked (ADR 0013)

    def to_json(self) -> dict[str, Any]:
        return {"signed": self.signed, "script_checksums": self.script_checksums}

    @classmethod
    def from_json(cls, data: Any) -> Posture:
        o = jsonio.expect_object(data, _W, {"signed", "script_checksums"}, set(), "posture")
        return cls(jsonio.expect_bool(o["signed"], _W, "posture.signed"),
                   jsonio.expect_bool(o["script_checksums"], _W, "posture.script_checksums"))

    def describe(self) -> str:
        need = [n for n, on in (("signed link", self.signed), ("script checksums", self.script_checksums)) if on]
        relaxed = [n for n, on in (("signed link", self.signed), ("script checksums", self.script_checksums))
                   if not on]
        return (f"posture required: {', '.join(need) or 'nothing'}"
                + (f"; relaxed by the manufacturer: {', '.join(relaxed)}" if relaxed else ""))


BOOT_STAGES: tuple[str, ...] = ("firmware", "platform-config", "bootloader", "bootloader-config", "kernel",
                                 "initrd", "cmdline")
MAX_BOOT_DIGESTS = 256  # allowed digests per boot stage


@dataclass(frozen=True)
class BootPolicy:
    """Golden values for the companion's boot (ADR 0019): the SHA-256 digests allowed per boot stage.

    Every event the companion's boot log extends into PCRs 0-9 falls in one stage
    (:func:`attest.boot.classify`) and its digest must be one listed for that stage; a stage not
    listed allows nothing. Several digests per stage let a fleet roll an update (old and new kernel
    both approved). ``unjudged`` names stages the manufacturer chose not to judge, shown by
    ``manifest show`` and ``verify``.
    """

    allowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unjudged: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for stage in (*self.allowed, *self.unjudged):
            if stage not in BOOT_STAGES:
                raise FormatError(_W, f"unknown boot stage {stage!r} (one of: {', '.join(BOOT_STAGES)})",
                                  "companion.boot")

    def digests(self, stage: str) -> tuple[str, ...]:
        return self.allowed.get(stage, ())

    def merged(self, other: BootPolicy) -> BootPolicy:
        """Both policies' allowed digests (old ones first), for rolling an update across a fleet."""
        return BootPolicy({s: tuple(dict.fromkeys((*self.digests(s), *other.digests(s)))) for s in BOOT_STAGES
                           if self.digests(s) or other.digests(s)},
                          tuple(s for s in BOOT_STAGES if s in self.unjudged or s in other.unjudged))

    def describe(self) -> str:
        counts = ", ".join(f"{len(self.digests(s))} {s}" for s in BOOT_STAGES if s not in self.unjudged)
        unjudged = f"; not judged: {', '.join(self.unjudged)}" if self.unjudged else ""
        return f"companion boot appraised against its event log: {counts}{unjudged}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"boot": {s: list(self.digests(s)) for s in BOOT_STAGES}}
        if self.unjudged:
            out["boot_unjudged"] = list(self.unjudged)
        return out

    @classmethod
    def from_json(cls, data: Any) -> BootPolicy:
        o = jsonio.expect_object(data, _W, {"boot"}, {"boot_unjudged"}, "companion")
        boot = jsonio.expect_object(o["boot"], _W, set(), set(BOOT_STAGES), "companion.boot")
        allowed = {}
        for stage, raw in boot.items():
            f = f"companion.boot.{stage}"
            digests = tuple(_sha256(d, f"{f}[{i}]")
                            for i, d in enumerate(jsonio.expect_list(raw, _W, f, MAX_BOOT_DIGESTS)))
            if len(set(digests)) != len(digests):
                raise FormatError(_W, "a digest is listed twice", f)
            allowed[stage] = digests
        unjudged = tuple(jsonio.expect_str_list(o.get("boot_unjudged", []), _W, "companion.boot_unjudged",
                                                len(BOOT_STAGES)))
        return cls(allowed, unjudged)


@dataclass(frozen=True)
class Manifest:
    """The signed supply-chain manifest: what an airframe may run (firmware, scripts, parameters,
    components with their origins, the companion) and until when."""

    version: int
    expires: datetime
    airframe: Airframe
    firmware: tuple[Firmware, ...] = ()
    firmware_min_release: int = 0
    scripts: tuple[Script, ...] = ()
    allow_unlisted_scripts: bool = False
    params: ParamPolicy = field(default_factory=ParamPolicy)
    components: tuple[ApprovedComponent, ...] = ()
    deny_origins: tuple[str, ...] = ()
    deny_vendors: tuple[str, ...] = ()
    min_strength: dict[Kind, Strength] = field(default_factory=dict)
    posture: Posture | None = None  # None: a manifest from before ADR 0014, which requires none
    companion_boot: BootPolicy | None = None  # None: the companion's boot is not appraised (ADR 0019)

    def to_json(self) -> dict[str, Any]:
        out = self._body()
        if self.posture is not None:  # absent when unused: manifests signed before it keep their bytes
            out["posture"] = self.posture.to_json()
        if self.companion_boot is not None:
            out["companion"] = self.companion_boot.to_json()
        return out

    def describe_boot(self) -> str:
        if self.companion_boot is None:
            return "companion boot: not appraised (the manifest has no companion.boot golden values)"
        return self.companion_boot.describe()

    def describe_posture(self) -> str:
        return self.posture.describe() if self.posture is not None else "posture: not required (an older manifest)"

    def _body(self) -> dict[str, Any]:
        return {
            "_type": MANIFEST_TYPE,
            "version": self.version,
            "expires": timeutil.format(self.expires),
            "airframe": self.airframe.to_json(),
            "firmware": [f.to_json() for f in self.firmware],
            "firmware_min_release": self.firmware_min_release,
            "scripts": [s.to_json() for s in self.scripts],
            "allow_unlisted_scripts": self.allow_unlisted_scripts,
            "params": self.params.to_json(),
            "components": [c.to_json() for c in self.components],
            "deny": {"origins": list(self.deny_origins), "vendors": list(self.deny_vendors)},
            "min_strength": {k.value: v.label for k, v in sorted(self.min_strength.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        o = jsonio.expect_object(
            data, _W, {"_type", "version", "expires", "airframe"},
            {"firmware", "firmware_min_release", "scripts", "allow_unlisted_scripts", "params", "components",
             "deny", "min_strength", "posture", "companion"},
        )
        if o["_type"] != MANIFEST_TYPE:
            raise FormatError(_W, f"_type is {o['_type']!r}, expected {MANIFEST_TYPE!r}", "_type")
        deny = jsonio.expect_object(o.get("deny", {}), _W, set(), {"origins", "vendors"}, "deny")
        strength_raw = o.get("min_strength", {})
        if not isinstance(strength_raw, dict):
            raise FormatError(_W, "must be an object", "min_strength")
        min_strength: dict[Kind, Strength] = {}
        for k, v in strength_raw.items():
            try:
                kind = Kind(k)
            except ValueError:
                raise FormatError(_W, f"unknown measurement kind {k!r}", f"min_strength.{k}") from None
            try:
                min_strength[kind] = Strength.parse(jsonio.expect_str(v, _W, f"min_strength.{k}", 64))
            except FormatError as exc:
                raise FormatError(_W, exc.detail, f"min_strength.{k}") from None
        scripts = tuple(Script.from_json(s, f"scripts[{i}]")
                        for i, s in enumerate(jsonio.expect_list(o.get("scripts", []), _W, "scripts", 256)))
        if len({s.path for s in scripts}) != len(scripts):
            raise FormatError(_W, "a script path is listed twice", "scripts")
        return cls(
            version=jsonio.expect_int(o["version"], _W, "version", 1),
            expires=timeutil.parse(o["expires"], _W, "expires"),
            airframe=Airframe.from_json(o["airframe"]),
            firmware=tuple(Firmware.from_json(f, f"firmware[{i}]")
                           for i, f in enumerate(jsonio.expect_list(o.get("firmware", []), _W, "firmware", 256))),
            firmware_min_release=jsonio.expect_int(o.get("firmware_min_release", 0), _W, "firmware_min_release"),
            scripts=scripts,
            allow_unlisted_scripts=jsonio.expect_bool(o.get("allow_unlisted_scripts", False), _W,
                                                      "allow_unlisted_scripts"),
            params=ParamPolicy.from_json(o.get("params", {})),
            components=tuple(ApprovedComponent.from_json(c, f"components[{i}]")
                             for i, c in enumerate(jsonio.expect_list(o.get("components", []), _W,
                                                                      "components", 512))),
            deny_origins=tuple(jsonio.expect_str_list(deny.get("origins", []), _W, "deny.origins", 256)),
            deny_vendors=tuple(jsonio.expect_str_list(deny.get("vendors", []), _W, "deny.vendors", 256)),
            min_strength=min_strength,
            posture=Posture.from_json(o["posture"]) if "posture" in o else None,
            companion_boot=BootPolicy.from_json(o["companion"]) if "companion" in o else None,
        )
