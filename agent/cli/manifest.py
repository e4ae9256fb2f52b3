"""``flightseal manifest``: build, sign, show and verify the supply-chain manifest.

Editing commands change the signed payload, so they drop existing signatures (and say so): a
manifest is re-signed by a threshold of manifest keys after its last edit. Re-baselining after
a firmware update is one ``manifest baseline`` from a measured inventory, then signing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.options import CheckFailed
from attest import dsse, jsonio, timeutil
from attest import params as paramdigest
from attest.errors import FlightSealError, FormatError
from attest.limits import LIMITS
from attest.manifest import (
    BOOT_STAGES,
    COMPONENT_CLASSES,
    Airframe,
    ApprovedComponent,
    BootPolicy,
    Document,
    Firmware,
    Manifest,
    ParamPolicy,
    Posture,
    Script,
    Supplier,
)
from attest.models import Kind, Measurement, Strength
from attest.trust import TrustedState
from hardware.files import read_bounded, write_atomic

if TYPE_CHECKING:
    from attest.baseline import PartInfo

MAX_IMAGE_BYTES = LIMITS.max_manifest_image_bytes


def read_manifest(path: Path) -> tuple[dsse.Envelope, Manifest]:
    env = dsse.Envelope.from_bytes(read_bounded(path, "manifest", LIMITS.max_manifest_bytes), f"manifest {path}")
    if env.payload_type != dsse.MANIFEST_PAYLOAD_TYPE:
        raise FormatError(f"manifest {path}", f"payload type {env.payload_type!r} is not a manifest")
    return env, Manifest.from_json(env.payload_json(f"manifest {path}", LIMITS.max_manifest_bytes))


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_atomic(path, dsse.Envelope(dsse.MANIFEST_PAYLOAD_TYPE, jsonio.dumps(manifest.to_json()), ()).to_bytes())


def _edit(path: Path, change: Callable[[Manifest], Manifest], summary: str) -> None:
    env, manifest = read_manifest(path)
    write_manifest(path, change(manifest))
    dropped = f"; {len(env.signatures)} signature(s) dropped, re-sign it" if env.signatures else ""
    click.echo(f"{summary}{dropped}")


def sha256_file(path: Path, what: str) -> str:
    return hashlib.sha256(read_bounded(path, what, MAX_IMAGE_BYTES)).hexdigest()


@click.group("manifest")
def manifest() -> None:
    """Build, sign, show and verify supply-chain manifests."""


@manifest.command("create")
@click.option("--airframe", required=True, help="Airframe model this manifest approves parts for.")
@click.option("--version", "version", type=click.IntRange(1, 2**53), required=True,
              help="Manifest version; must grow with every release (rollback protection).")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True)
def create(airframe: str, version: int, expires_days: int, out: Path) -> None:
    """Start an empty manifest (it approves nothing until you add to it)."""
    expires = timeutil.now() + timedelta(days=expires_days)
    value = Manifest(version=version, expires=expires, airframe=Airframe(airframe), posture=Posture())
    write_manifest(out, value)
    click.echo(f"wrote manifest v{version} for {airframe} to {out} (expires in {expires_days} days; "
               f"{value.describe_posture()}: relax with `manifest set --relax-posture`)")


@manifest.command("add-firmware")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True)
@click.option("--fw-version", required=True, help="e.g. 4.7.0")
@click.option("--git-hash", required=True, help="8-character git hash the firmware reports")
@click.option("--board-id", type=click.IntRange(0), required=True)
@click.option("--release", type=click.IntRange(0), required=True, help="Monotonic release counter.")
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False), help="Firmware image to hash.")
@click.option("--sha256", "sha256", help="Image digest, if the image is not at hand.")
def add_firmware(path: Path, name: str, fw_version: str, git_hash: str, board_id: int, release: int,
                 image: Path | None, sha256: str | None) -> None:
    """Approve an FC firmware build."""
    digest = sha256_file(image, "firmware image") if image else sha256
    entry = Firmware.from_json({**Firmware(name, fw_version, git_hash, board_id, release).to_json(),
                                **({"sha256": digest} if digest else {})}, "--sha256")
    _edit(path, lambda m: dataclasses.replace(m, firmware=(*m.firmware, entry)),
          f"approved firmware {name} {fw_version} ({git_hash}) release {release}")


@manifest.command("add-script")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--fc-path", required=True, help="Path on the FC, e.g. scripts/flightseal.lua")
@click.option("--file", "local", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--required", is_flag=True, help="Arming is refused if this script is absent.")
def add_script(path: Path, fc_path: str, local: Path, required: bool) -> None:
    """Approve a Lua script by its content."""
    entry = Script(fc_path, sha256_file(local, "script"), required)
    _edit(path, lambda m: dataclasses.replace(m, scripts=(*[s for s in m.scripts if s.path != fc_path], entry)),
          f"approved script {fc_path}")


@manifest.command("add-component")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True)
@click.option("--selector", required=True, help="Glob over measured component ids, e.g. 'mavlink:1/154'.")
@click.option("--vendor", required=True)
@click.option("--model", required=True)
@click.option("--origin", required=True, help="ISO 3166-1 alpha-2 country of origin.")
@click.option("--hardware-id", "hardware_ids", multiple=True)
@click.option("--firmware-sha256", "firmware_sha256", multiple=True)
@click.option("--firmware-crc64", "firmware_crc64", multiple=True,
              help="Approved DroneCAN firmware image CRC (16 hex digits, as `flightseal measure` shows it).")
@click.option("--class", "part_class", type=click.Choice(COMPONENT_CLASSES),
              help="Critical-component class for the bill of materials (a selector no measurement matches, e.g. "
                   "'gcs:qgroundcontrol', declares software such as the operator's ground-control station).")
def add_component(path: Path, name: str, selector: str, vendor: str, model: str, origin: str,
                  hardware_ids: tuple[str, ...], firmware_sha256: tuple[str, ...],
                  firmware_crc64: tuple[str, ...], part_class: str | None) -> None:
    """Approve a part (camera, radio, ESC, GPS...)."""
    entry = ApprovedComponent.from_json({"name": name, "selector": selector, "vendor": vendor, "model": model,
                                         "origin": origin, "hardware_ids": list(hardware_ids),
                                         "firmware_sha256": list(firmware_sha256),
                                         "firmware_crc64": list(firmware_crc64),
                                         **({"class": part_class} if part_class else {})}, "component")
    _edit(path, lambda m: dataclasses.replace(m, components=(*m.components, entry)), f"approved component {name}")


@manifest.command("part")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--selector", required=True, help="The approved part's selector, as `manifest show` lists it.")
@click.option("--class", "part_class", type=click.Choice(COMPONENT_CLASSES), help="Critical-component class.")
@click.option("--assembler", help="Who assembled the part.")
@click.option("--chip-origin", help="ISO 3166-1 alpha-2 country of the part's main chip.")
@click.option("--document", "documents", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="A supporting document (certificate, declaration): its SHA-256 is recorded (repeatable).")
@click.option("--title", "titles", multiple=True, help="Title of each --document, in order.")
def part(path: Path, selector: str, part_class: str | None, assembler: str | None, chip_origin: str | None,
         documents: tuple[Path, ...], titles: tuple[str, ...]) -> None:
    """Set an approved part's class, supplier chain and supporting documents (for the bill of materials)."""
    if len(titles) != len(documents):
        raise click.UsageError("give one --title per --document")
    docs = tuple(Document(sha256_file(d, "document"), t) for d, t in zip(documents, titles, strict=True))

    def change(m: Manifest) -> Manifest:
        if not any(c.selector == selector for c in m.components):
            raise click.BadParameter(f"no approved part has selector {selector!r} (see `manifest show`)",
                                     param_hint="--selector")
        out = []
        for c in m.components:
            if c.selector == selector:
                old = c.supplier or Supplier()
                supplier = Supplier(old.assembler if assembler is None else assembler,
                                    old.chip_origin if chip_origin is None else chip_origin)
                c = ApprovedComponent.from_json(dataclasses.replace(
                    c, part_class=part_class or c.part_class, supplier=supplier,
                    documents=(*c.documents, *docs)).to_json(), f"part {selector}")
            out.append(c)
        return dataclasses.replace(m, components=tuple(out))
    _edit(path, change, f"updated part {selector}")


@manifest.command("deny")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--origin", "origins", multiple=True, help="Country code to deny.")
@click.option("--vendor", "vendors", multiple=True, help="Vendor to deny.")
def deny(path: Path, origins: tuple[str, ...], vendors: tuple[str, ...]) -> None:
    """Deny parts by origin or vendor."""
    _edit(path, lambda m: dataclasses.replace(m, deny_origins=tuple(dict.fromkeys((*m.deny_origins, *origins))),
                                              deny_vendors=tuple(dict.fromkeys((*m.deny_vendors, *vendors)))),
          f"denied origins {list(origins)} vendors {list(vendors)}")


@manifest.command("pin-param")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("name")
@click.argument("value", type=float)
def pin_param(path: Path, name: str, value: float) -> None:
    """Pin an FC parameter to a value."""
    if not math.isfinite(value) or abs(value) > 2**53:
        raise click.BadParameter(f"{value} is not a parameter value: a finite number up to 2**53", param_hint="VALUE")
    def change(m: Manifest) -> Manifest:
        pinned = {**m.params.pinned, name: value}
        return dataclasses.replace(m, params=ParamPolicy.from_json({**m.params.to_json(), "pinned": pinned}))
    _edit(path, change, f"pinned {name} = {value:g}")


@manifest.command("exclude-param")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--add", "add", multiple=True, metavar="PATTERN", help="Stop judging these (glob, e.g. 'MAV[1-9]_*').")
@click.option("--remove", "remove", multiple=True, metavar="PATTERN", help="Judge these again.")
def exclude_param(path: Path, add: tuple[str, ...], remove: tuple[str, ...]) -> None:
    """Change which parameters the approved set leaves out (volatile ones; ADR 0011 has the defaults)."""
    def change(m: Manifest) -> Manifest:
        unknown = [p for p in remove if p not in m.params.exclude]
        if unknown:
            raise click.BadParameter(f"{', '.join(unknown)} is not excluded (see `manifest show`)",
                                     param_hint="--remove")
        if remove and m.params.values:
            raise click.BadParameter("the manifest approves parameter values measured without these parameters; "
                                     "remove the exclusion, then re-baseline (`measure --manifest`, `manifest "
                                     "baseline`) so their values are approved too", param_hint="--remove")
        exclude = tuple(dict.fromkeys(p for p in (*m.params.exclude, *add) if p not in remove))
        values = paramdigest.included(m.params.values, exclude)
        return dataclasses.replace(m, params=dataclasses.replace(m.params, exclude=exclude, values=values))
    if not add and not remove:
        raise click.UsageError("give --add PATTERN or --remove PATTERN")
    _edit(path, change, f"parameter exclusions: added {list(add)}, removed {list(remove)}")


@manifest.command("set")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--min-release", type=click.IntRange(0), help="Refuse approved firmware below this release.")
@click.option("--min-strength", "strengths", multiple=True, metavar="KIND=STRENGTH",
              help="e.g. firmware-image=image-and-bootloader")
@click.option("--bind-board-id", "board_ids", multiple=True, type=click.IntRange(0))
@click.option("--bind-fc-uid", "fc_uids", multiple=True)
@click.option("--bind-device", "device_ids", multiple=True)
@click.option("--params-sha256", help="Digest of the whole parameter set (see `flightseal measure`).")
@click.option("--version", "version", type=click.IntRange(1, 2**53), help="Bump the version for a new release.")
@click.option("--expires-days", type=click.IntRange(1, 3650), help="Renew: expire this many days from now.")
@click.option("--relax-posture", "relax", multiple=True, type=click.Choice(["signed", "script-checksums"]),
              help="Stop requiring this protection of the FC's links (ADR 0014; shown by show and verify).")
@click.option("--require-posture", "require", multiple=True, type=click.Choice(["signed", "script-checksums"]),
              help="Require this protection again.")
def set_(path: Path, min_release: int | None, strengths: tuple[str, ...], board_ids: tuple[int, ...],
         fc_uids: tuple[str, ...], device_ids: tuple[str, ...], params_sha256: str | None, version: int | None,
         expires_days: int | None, relax: tuple[str, ...], require: tuple[str, ...]) -> None:
    """Set policy fields: minimum release, strengths, airframe binding, version, expiry."""
    def change(m: Manifest) -> Manifest:
        min_strength = dict(m.min_strength)
        for item in strengths:
            kind, _, strength = item.partition("=")
            try:
                min_strength[Kind(kind)] = Strength.parse(strength)
            except ValueError:
                raise click.BadParameter(f"{item!r}: unknown kind {kind!r}", param_hint="--min-strength") from None
        airframe = Airframe(m.airframe.model, (*m.airframe.board_ids, *board_ids), (*m.airframe.fc_uids, *fc_uids),
                            (*m.airframe.device_ids, *device_ids))
        policy = m.params
        if params_sha256:
            policy = ParamPolicy.from_json({**m.params.to_json(), "sha256": params_sha256})
        posture = m.posture
        if relax or require:
            base = posture or Posture(False, False)
            posture = Posture(signed=("signed" in require) or (base.signed and "signed" not in relax),
                              script_checksums=("script-checksums" in require) or (
                                  base.script_checksums and "script-checksums" not in relax))
        return dataclasses.replace(
            m, min_strength=min_strength, airframe=airframe, params=policy, posture=posture,
            firmware_min_release=m.firmware_min_release if min_release is None else min_release,
            version=m.version if version is None else version,
            expires=m.expires if expires_days is None else timeutil.now() + timedelta(days=expires_days))
    _edit(path, change, f"updated {path}")


@manifest.command("baseline")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--measurements", "measurements_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Inventory of a trusted reference airframe (`flightseal measure --json`).")
@click.option("--release", type=click.IntRange(0),
              help="Release counter of the measured firmware (needs --measurements).")
@click.option("--require-script", "required", multiple=True, help="FC path of a script that must be present.")
@click.option("--pin", "pins", multiple=True, help="Parameter to pin to its measured value.")
@click.option("--part", "parts", multiple=True, metavar="ID=NAME,VENDOR,MODEL,ORIGIN[,CLASS]",
              help="Approve a measured part, e.g. 'mavlink:1/100=gimbal,Acme,AC-1,JP,gimbal' (CLASS: one of "
                   f"{', '.join(COMPONENT_CLASSES)}; `manifest part` adds supplier data).")
@click.option("--boot-log", "boot_logs", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Boot event log of a reference companion (its binary_bios_measurements): approve exactly its boot.")
@click.option("--add-boot-log", "add_boot_logs", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Approve this reference boot too, keeping the boot digests approved before (a rolling update).")
@click.option("--boot-unjudged", "unjudged", multiple=True, type=click.Choice(BOOT_STAGES),
              help="Do not judge this boot stage (shown by `manifest show` and `verify`).")
def baseline_cmd(path: Path, measurements_path: Path | None, release: int | None, required: tuple[str, ...],
                 pins: tuple[str, ...], parts: tuple[str, ...], boot_logs: tuple[Path, ...],
                 add_boot_logs: tuple[Path, ...], unjudged: tuple[str, ...]) -> None:
    """Re-baseline: approve exactly what was measured, bump the version; then sign with a threshold."""
    from attest.baseline import BaselineError, baseline

    if measurements_path is None and not boot_logs and not add_boot_logs:
        raise click.UsageError("give --measurements FILE, --boot-log FILE or --add-boot-log FILE")
    if (measurements_path is None) != (release is None):
        raise click.UsageError("--measurements and --release go together")
    _, current = read_manifest(path)
    updated = current
    notes: list[str] = []
    try:
        if measurements_path is not None and release is not None:
            measured, part_info = _inventory(measurements_path, parts)
            updated, notes = baseline(current, measured, release=release, parts=part_info, required_scripts=required,
                                      pin=pins)
        if boot_logs or add_boot_logs:
            updated, boot_notes = _boot_baseline(updated, boot_logs, add_boot_logs, unjudged)
            notes += boot_notes
    except BaselineError as exc:  # nothing is written: a pin asked for is never dropped silently
        raise click.BadParameter(str(exc), param_hint=f"--{exc.option}") from None
    updated = dataclasses.replace(updated, version=current.version + 1)
    # parse the result back: the same closed-schema checks as any manifest (e.g. a bad origin code)
    Manifest.from_json(jsonio.loads(jsonio.dumps(updated.to_json()), "manifest", LIMITS.max_manifest_bytes))
    write_manifest(path, updated)
    for note in notes:
        click.echo(f"  note: {note}")
    p = updated.params
    approved = (f"{len(p.values)} parameter values" if p.values else "the parameter digest") + (
        f" ({len(p.exclude)} exclusion patterns), {len(p.pinned)} pinned")
    sources = ", ".join(str(x) for x in (measurements_path, *boot_logs, *add_boot_logs) if x is not None)
    click.echo(f"baselined {path} as v{updated.version} from {sources}: {len(updated.firmware)} firmware, "
               f"{len(updated.scripts)} scripts, {len(updated.components)} parts, {approved}; {updated.describe_boot()}"
               "; sign it with a threshold of manifest keys")


def _inventory(path: Path, parts: tuple[str, ...]) -> tuple[list[Measurement], dict[str, PartInfo]]:
    from agent.cli.verify import read_measurements
    from attest.baseline import PartInfo

    part_info: dict[str, PartInfo] = {}
    for item in parts:
        ident, _, rest = item.partition("=")
        fields = rest.split(",")
        if not ident or len(fields) not in (4, 5):
            raise click.BadParameter(f"{item!r}: use ID=NAME,VENDOR,MODEL,ORIGIN[,CLASS]", param_hint="--part")
        if len(fields) == 5 and fields[4] not in COMPONENT_CLASSES:
            raise click.BadParameter(f"{item!r}: unknown class {fields[4]!r} (one of: {', '.join(COMPONENT_CLASSES)})",
                                     param_hint="--part")
        part_info[ident] = PartInfo(fields[0], fields[1], fields[2], fields[3], fields[4] if len(fields) == 5 else None)
    measured = read_measurements(path)
    unknown = sorted(set(part_info) - {m.component for m in measured})
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)} was not measured in {path}", param_hint="--part")
    return measured, part_info


def _boot_baseline(current: Manifest, boot_logs: tuple[Path, ...], add_boot_logs: tuple[Path, ...],
                   unjudged: tuple[str, ...]) -> tuple[Manifest, list[str]]:
    """The companion boot section from reference boot logs (replacing it, or added to it with --add-boot-log)."""
    from attest import eventlog
    from attest.baseline import baseline_boot

    logs = []
    for log_path in (*boot_logs, *add_boot_logs):
        try:
            logs.append(eventlog.parse(read_bounded(log_path, "boot event log", LIMITS.max_boot_log_bytes)))
        except FormatError as exc:
            raise FormatError(f"boot event log {log_path}", exc.detail, exc.field) from None
    updated, notes = baseline_boot(current, logs, add=not boot_logs)
    if unjudged and updated.companion_boot is not None:
        policy = updated.companion_boot
        updated = dataclasses.replace(updated, companion_boot=BootPolicy(
            policy.allowed, tuple(s for s in BOOT_STAGES if s in unjudged or s in policy.unjudged)))
    return updated, notes


@manifest.command("show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--full", is_flag=True, help="List every approved parameter value too.")
def show(path: Path, full: bool) -> None:
    """Print the manifest's content and who signed it."""
    env, m = read_manifest(path)
    data = m.to_json()
    if m.params.values and not full:
        data["params"]["values"] = f"({len(m.params.values)} approved values; --full lists them)"
    click.echo(jsonio.pretty(data).rstrip())
    click.echo(f"signatures: {', '.join(s.keyid[:16] + '…' for s in env.signatures) or 'none'}")
    p = m.params
    judged = (f"{len(p.values)} approved values, named when they differ" if p.values
              else "a digest only (re-baseline to name what differs)" if p.digest else "not judged")
    click.echo(f"parameters: {judged}; {len(p.pinned)} pinned; not judged (volatile): {', '.join(p.exclude) or 'none'}")
    click.echo(m.describe_posture())
    click.echo(m.describe_boot())


@manifest.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--root", "root_path", type=click.Path(path_type=Path), required=True, help="Pinned root.json.")
@click.option("--min-version", type=click.IntRange(0), default=0, help="Highest manifest version seen so far.")
def verify(path: Path, root_path: Path, min_version: int) -> None:
    """Check signatures, threshold, expiry and version. Exit 0 if trusted, 1 if not."""
    state = TrustedState(read_bounded(root_path, "root", LIMITS.max_root_bytes))
    try:
        v = state.verify_manifest(read_bounded(path, "manifest", LIMITS.max_manifest_bytes), timeutil.now(),
                                  min_version)
    except FlightSealError as exc:
        from attest.appraise import manifest_failure

        reason = manifest_failure(exc)
        click.echo(f"FAIL {reason}")
        raise CheckFailed("") from None
    click.echo(f"OK manifest v{v.manifest.version} for {v.manifest.airframe.model}, sha256 {v.digest[:16]}…, "
               f"signed by {len(v.signers)} of {len(state.root.roles['manifest'].keyids)} manifest keys "
               f"(threshold {state.root.roles['manifest'].threshold}), expires {timeutil.format(v.manifest.expires)}")


def register(group: click.Group) -> None:
    group.add_command(manifest)
