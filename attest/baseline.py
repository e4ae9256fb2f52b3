"""Re-baselining: a manifest that approves exactly what was measured on a reference airframe.

After a firmware update the manufacturer measures a reference airframe it trusts and turns the
inventory into the next manifest in one step (then reviews it and signs it with a threshold), so
allowlists do not rot with every update. Parts still need a vendor and an origin a human vouches
for: the caller supplies them per component id; a part without them is left out (and so stays
``component-unknown``) rather than approved with a guessed origin.

The companion's boot is baselined the same way, from the boot event log of a reference companion
(:func:`baseline_boot`): either exactly what it booted, or added to what was approved before, so
a fleet can roll a kernel update with old and new kernels both approved (ADR 0019).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from attest import params
from attest.appraise import param_claims
from attest.boot import policy_from_log
from attest.errors import FlightSealError
from attest.eventlog import EventLog
from attest.manifest import ApprovedComponent, BootPolicy, Firmware, Manifest, ParamPolicy, Script
from attest.models import Kind, Measurement


@dataclass(frozen=True)
class PartInfo:
    name: str
    vendor: str
    model: str
    origin: str
    part_class: str | None = None  # issue 15: the critical-component class, if the manufacturer gives it


# Pinned in every re-baselined manifest (ADR 0013): what the arming gate's life depends on. ArduPilot
# refuses arming by itself when the scripts change only while these hold their values.
DEFAULT_PINS: tuple[str, ...] = ("ARMING_CHECK", "SCR_ENABLE", "SCR_LD_CHECKSUM", "SCR_RUN_CHECKSUM", "SCR_DEBUG_OPTS",
                                 "SCR_DIR_DISABLE", "SCR_VM_I_COUNT", "SCR_HEAP_SIZE")


class BaselineError(FlightSealError):
    """The measured inventory cannot give what was asked for (e.g. a pin of an unmeasured parameter).

    ``option`` names the input at fault (``pin`` or ``measurements``), for the CLI's message.
    """

    def __init__(self, message: str, option: str = "pin") -> None:
        super().__init__(message)
        self.option = option


def baseline(base: Manifest, measurements: Sequence[Measurement], *, release: int,
             parts: Mapping[str, PartInfo] | None = None, required_scripts: Sequence[str] = (),
             pin: Sequence[str] = (), default_pins: Sequence[str] = DEFAULT_PINS) -> tuple[Manifest, list[str]]:
    """The manifest ``base`` with firmware, scripts, parameters and parts taken from ``measurements``.

    Returns the manifest and notes on what was left out and why. Raises ``BaselineError`` for
    what must not be left out silently: a pin asked for that the inventory has no value for. The
    ``default_pins`` are pinned where measured; each one that is not is noted.
    """
    notes: list[str] = []
    parts = parts or {}
    by_kind: dict[Kind, list[Measurement]] = {k: [] for k in Kind}
    for m in measurements:
        by_kind[m.kind].append(m)

    firmware = base.firmware
    if by_kind[Kind.FIRMWARE]:
        ident = by_kind[Kind.FIRMWARE][0]
        image = by_kind[Kind.FIRMWARE_IMAGE][0] if by_kind[Kind.FIRMWARE_IMAGE] else None
        entry = Firmware(name=str(ident.claims.get("vehicle", "firmware")) or "firmware",
                         version=str(ident.claims.get("version", "")), git_hash=str(ident.claims.get("git_hash", "")),
                         board_id=int(ident.claims.get("board_id", 0)), release=release,
                         sha256=image.digests.get("sha256") if image else None)
        firmware = (*[f for f in base.firmware if f.git_hash != entry.git_hash or f.board_id != entry.board_id],
                    entry)
        if image is None:
            notes.append("no firmware image was measured: the manifest approves the identity only")
    else:
        notes.append("no firmware identity was measured: firmware left as it was")

    scripts = tuple(Script(str(m.claims.get("path", m.component.removeprefix("fc.script:"))), m.digests["sha256"],
                           required=str(m.claims.get("path", "")) in required_scripts)
                    for m in by_kind[Kind.SCRIPT] if "sha256" in m.digests)

    params = _param_policy(base.params, by_kind[Kind.PARAMS], pin, notes, default_pins)

    components = list(base.components)
    for m in by_kind[Kind.COMPONENT]:
        info = parts.get(m.component)
        if info is None:
            notes.append(f"{m.component} left out: give its vendor, model and origin to approve it")
            continue
        hw = str(m.claims.get("hardware_id", ""))
        crc64 = m.digests.get("crc64")
        components.append(ApprovedComponent(info.name, m.component, info.vendor, info.model, info.origin,
                                            hardware_ids=(hw,) if hw else (),
                                            firmware_crc64=(crc64,) if crc64 else (), part_class=info.part_class))

    min_strength = dict(base.min_strength)
    for m in by_kind[Kind.FIRMWARE_IMAGE][:1]:
        min_strength.setdefault(Kind.FIRMWARE_IMAGE, m.strength)
    firmware_min = max(base.firmware_min_release, release)
    return replace(base, firmware=firmware, firmware_min_release=firmware_min, scripts=scripts, params=params,
                   components=tuple(components), min_strength=min_strength), notes


def _param_policy(base: ParamPolicy, measured: Sequence[Measurement], pin: Sequence[str],
                  notes: list[str], default_pins: Sequence[str]) -> ParamPolicy:
    """The approved parameter set and pins from the measured parameters.

    An inventory that names every parameter (``flightseal measure``) gives the approved values,
    so a later mismatch is named parameter by parameter; an older one gives only the digest.
    """
    if not measured:
        notes.extend(f"{name} (pinned by default) was not measured" for name in default_pins)
        if pin:
            raise BaselineError(f"cannot pin {', '.join(pin)}: the inventory has no parameter measurement")
        notes.append("no parameters were measured: the parameter policy is left as it was")
        return base
    pm = measured[0]
    claimed = param_claims(pm)
    exclude = tuple(str(pm.claims["exclude"]).split(",")) if pm.claims.get("exclude") else base.exclude
    pinned = dict(base.pinned)
    unmeasured = [name for name in pin if claimed.get(name) is None]
    if unmeasured:
        raise BaselineError(f"cannot pin {', '.join(unmeasured)}: no value in the inventory (the FC does not have "
                            "it, or the inventory names only some parameters; measure with `flightseal measure "
                            "--json`)")
    for name in pin:
        value = claimed[name]
        assert value is not None
        pinned[name] = value
    for name in default_pins:
        value = claimed.get(name)
        if value is None:
            notes.append(f"{name} (pinned by default) was not measured: is scripting on, and the gate installed?")
        elif name not in pin:
            pinned[name] = value
    full = pm.claims.get("count") == len(claimed) and None not in claimed.values()
    if not full:
        notes.append("the inventory does not name every parameter: the manifest approves the parameter digest "
                     "only, so a mismatch cannot name the parameter (measure with `flightseal measure --json`)")
        return ParamPolicy(pinned=pinned, digest=pm.digests.get("sha256"), exclude=exclude)
    values = params.included({n: v for n, v in claimed.items() if v is not None}, exclude)
    if params.digest(values, exclude) != pm.digests.get("sha256"):
        raise BaselineError("the inventory's parameter values do not give its parameter digest: it was edited or "
                            "is corrupt; measure again", "measurements")
    return ParamPolicy(pinned=pinned, exclude=exclude, values=values)


def baseline_boot(base: Manifest, logs: Sequence[EventLog], *, add: bool) -> tuple[Manifest, list[str]]:
    """``base`` approving the boot stages of these reference logs: only them, or (``add``) besides what
    it approved already. Raises ``BaselineError`` for a log that records no measured boot at all."""
    policy = BootPolicy()
    for log in logs:
        if not any(e.extends for e in log.events):
            raise BaselineError("the boot event log records no measurement: the reference companion has no "
                                "measured boot", "boot-log")
        policy = policy.merged(policy_from_log(log))
    notes = []
    if add and base.companion_boot is not None:
        old = base.companion_boot
        policy = old.merged(policy)
        new = {s: len(policy.digests(s)) - len(old.digests(s)) for s in policy.allowed}
        notes.append("boot digests added: " + (", ".join(f"{n} {s}" for s, n in new.items() if n) or "none (all "
                                               "were approved already)"))
    elif base.companion_boot is not None:
        policy = BootPolicy(policy.allowed, base.companion_boot.unjudged)
    return replace(base, companion_boot=policy), notes
