"""Golden values for the companion's boot: its event log, replayed to the quoted PCRs, judged event by event.

The companion's firmware and bootloader record every digest they extend into PCRs 0-9 in a TCG
event log (:mod:`attest.eventlog`); the agent ships that log in the quote. The log is unsigned, so
these rules hold (ADR 0019):

- no boot policy in the manifest → nothing here is checked (``verify`` says the boot is not appraised);
- a policy but no quote or no log → ``companion-boot-log-missing``; a log that does not parse →
  ``companion-boot-log-invalid``;
- every boot PCR (0-9) the log extends must be quoted, and every quoted boot PCR must equal the
  log's replay (a PCR no event extends replays to its reset value) → else
  ``companion-boot-log-mismatch``: an edited or truncated log, a PCR reset, or events extended
  without a log entry. A log that does not replay is not evidence, so its events are not judged;
- each event the log extends into PCRs 0-9 falls in one stage (:func:`classify`) and its SHA-256
  must be allowed for that stage → else ``companion-boot-unknown`` naming the stage and digest; a
  stage the policy approves values for that does not appear at all → ``companion-boot-stage-missing``.

Only the digests are authenticated (by the replay). Event types and descriptions, which decide the
stage, are not: a forged description can move an approved digest into another stage's list (where
it is refused unless approved there too), never make an unapproved digest pass.
"""

from __future__ import annotations

import hmac
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attest import eventlog as ev
from attest.errors import FormatError
from attest.manifest import BOOT_STAGES, BootPolicy
from attest.models import Code, Reason
from attest.quote import Quote

BOOT_PCRS: tuple[int, ...] = tuple(range(10))
MAX_REASONS_PER_STAGE = 8
COMPONENT = "companion.boot"

_FIRMWARE_CODE = frozenset({
    ev.EV_S_CRTM_CONTENTS, ev.EV_S_CRTM_VERSION, ev.EV_POST_CODE, ev.EV_POST_CODE2, ev.EV_CPU_MICROCODE,
    ev.EV_EFI_PLATFORM_FIRMWARE_BLOB, ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2, ev.EV_EFI_HCRTM_EVENT,
    ev.EV_EFI_BOOT_SERVICES_DRIVER, ev.EV_EFI_RUNTIME_SERVICES_DRIVER, ev.EV_NONHOST_CODE,
    ev.EV_EFI_SPDM_FIRMWARE_BLOB,
})
_KERNEL_FILES = ("vmlinuz", "vmlinux", "image", "zimage", "bzimage", "kernel", "uimage", "fitimage")
_INITRD_FILES = ("initrd", "initramfs")
_UBOOT = {"linux": "kernel", "initrd": "initrd", "bootargs": "cmdline", "dts": "platform-config"}
_GRUB_CMDLINE = "kernel_cmdline: "


@dataclass(frozen=True)
class StageEvent:
    """One extended event of the boot log and the stage it is judged as."""

    stage: str
    event: ev.Event

    @property
    def digest(self) -> str:
        return self.event.digest.hex()

    def describe(self) -> str:
        label = ev.text(self.event.data)[:80] if _is_text(self.event) else ""
        return f"{self.event.type_name} on PCR {self.event.pcr}" + (f", {label!r}" if label else "")


def _is_text(e: ev.Event) -> bool:
    return e.type in (ev.EV_IPL, ev.EV_EFI_ACTION, ev.EV_ACTION, ev.EV_COMPACT_HASH, ev.EV_PLATFORM_CONFIG_FLAGS,
                      ev.EV_TABLE_OF_DEVICES)


def classify(log: ev.EventLog) -> list[StageEvent]:
    """Every event the log extends into PCRs 0-9, with its stage (one of ``BOOT_STAGES``).

    - PCR 4 EFI applications: the last one, when there are two or more, is the ``kernel`` (its EFI
      stub, loaded through LoadImage or shim); the ones before it are the ``bootloader`` (shim,
      GRUB, systemd-boot);
    - firmware code in PCRs 0 and 2 (CRTM, firmware volumes, option ROM drivers) is ``firmware``;
    - GRUB's strings in PCR 8: ``kernel_cmdline: …`` is the ``cmdline``, its commands
      (``grub_cmd: …``) are ``bootloader-config``; the files it reads into PCR 9 are the ``kernel``
      (vmlinuz…, Image…) or ``initrd`` (initrd…, initramfs…) by file name, the rest (grub.cfg,
      modules) ``bootloader-config``;
    - U-Boot's ``bootm`` events named ``linux``, ``initrd``, ``bootargs``, ``dts``: ``kernel``,
      ``initrd``, ``cmdline``, ``platform-config``;
    - everything else in PCRs 0-7 (separators, UEFI variables, GPT, actions, tables) is
      ``platform-config``, and in PCRs 8-9 ``bootloader-config``.
    """
    apps = [e for e in log.events if e.pcr == 4 and e.type == ev.EV_EFI_BOOT_SERVICES_APPLICATION]
    kernel_app = apps[-1].index if len(apps) >= 2 else None
    return [StageEvent(_stage(e, kernel_app), e) for e in log.events if e.extends and e.pcr in BOOT_PCRS]


def _stage(e: ev.Event, kernel_app: int | None) -> str:
    if e.pcr == 4 and e.type == ev.EV_EFI_BOOT_SERVICES_APPLICATION:
        return "kernel" if e.index == kernel_app else "bootloader"
    if e.pcr in (0, 2) and e.type in _FIRMWARE_CODE:
        return "firmware"
    label = ev.text(e.data) if _is_text(e) else ""
    if e.type in (ev.EV_COMPACT_HASH, ev.EV_PLATFORM_CONFIG_FLAGS, ev.EV_TABLE_OF_DEVICES) and label in _UBOOT:
        return _UBOOT[label]
    if e.pcr == 8 and e.type == ev.EV_IPL and label.startswith(_GRUB_CMDLINE):
        return "cmdline"
    if e.pcr == 9 and e.type == ev.EV_IPL:
        name = posixpath.basename(label).lower()
        if name.startswith(_INITRD_FILES):
            return "initrd"
        if name.startswith(_KERNEL_FILES):
            return "kernel"
    return "bootloader-config" if e.pcr >= 8 else "platform-config"


def appraise_boot(quote_json: Any | None, policy: BootPolicy | None) -> list[Reason]:
    """Every reason the companion's boot, as its quote's event log shows it, is not one ``policy`` approves."""
    if policy is None:
        return []
    if quote_json is None:
        return [Reason(Code.COMPANION_BOOT_LOG_MISSING, "the attestation carries no TPM quote, so no boot event log; "
                       "the manifest requires the companion's boot to be appraised", COMPONENT)]
    try:
        quote = Quote.from_json(quote_json)
    except FormatError as exc:
        return [Reason(Code.COMPANION_BOOT_LOG_INVALID, f"the quote cannot be read, so neither can its boot log "
                       f"({exc})", COMPONENT)]
    if not quote.boot_log:
        return [Reason(Code.COMPANION_BOOT_LOG_MISSING, "the quote carries no boot event log (a companion without "
                       "measured boot, or the agent cannot read its log); the manifest requires one", COMPONENT)]
    try:
        log = ev.parse(quote.boot_log)
    except FormatError as exc:
        return [Reason(Code.COMPANION_BOOT_LOG_INVALID, str(exc), COMPONENT)]
    mismatch = replay_reasons(log, quote.pcrs)
    return mismatch or judge(classify(log), policy)


def replay_reasons(log: ev.EventLog, quoted: Mapping[int, bytes]) -> list[Reason]:
    """Why the log is not the record of how the quoted boot PCRs got their values; empty if it is."""
    out = []
    unquoted = sorted(p for p in log.pcrs() if p in BOOT_PCRS and p not in quoted)
    if unquoted:
        out.append(Reason(Code.COMPANION_BOOT_LOG_MISMATCH, f"the boot log extends PCR(s) {_list(unquoted)}, which "
                          "the quote does not cover (quote PCRs 0-9)", COMPONENT))
    checked = sorted(p for p in quoted if p in BOOT_PCRS or p in log.pcrs())
    replayed = log.replay(checked)
    wrong = [p for p in checked if not hmac.compare_digest(replayed[p], quoted[p])]
    if wrong:
        out.append(Reason(Code.COMPANION_BOOT_LOG_MISMATCH, f"replaying the boot log ({len(log.events)} events) does "
                          f"not give quoted PCR(s) {_list(wrong)}: the log was edited, a PCR was reset, or something "
                          "extended it without logging", COMPONENT))
    return out


def judge(events: Sequence[StageEvent], policy: BootPolicy) -> list[Reason]:
    """Each event's digest against its stage's approved digests."""
    out: list[Reason] = []
    for stage in BOOT_STAGES:
        if stage in policy.unjudged:
            continue
        allowed = set(policy.digests(stage))
        seen = [e for e in events if e.stage == stage]
        unknown = [e for e in seen if e.digest not in allowed]
        for e in unknown[:MAX_REASONS_PER_STAGE]:
            out.append(Reason(Code.COMPANION_BOOT_UNKNOWN, f"{stage} sha256 {e.digest} ({e.describe()}) is not "
                              f"approved (the manifest approves {len(allowed)} {stage} digest(s))",
                              f"{COMPONENT}:{stage}"))
        if len(unknown) > MAX_REASONS_PER_STAGE:
            out.append(Reason(Code.COMPANION_BOOT_UNKNOWN, f"and {len(unknown) - MAX_REASONS_PER_STAGE} more "
                              f"unapproved {stage} events", f"{COMPONENT}:{stage}"))
        if allowed and not seen:
            out.append(Reason(Code.COMPANION_BOOT_STAGE_MISSING, f"the boot log has no {stage} event, but the "
                              f"manifest approves {len(allowed)} {stage} digest(s)", f"{COMPONENT}:{stage}"))
    return out


def policy_from_log(log: ev.EventLog) -> BootPolicy:
    """A policy approving exactly the digests of this (trusted, reference) boot, stage by stage."""
    allowed: dict[str, list[str]] = {}
    for e in classify(log):
        allowed.setdefault(e.stage, [])
        if e.digest not in allowed[e.stage]:
            allowed[e.stage].append(e.digest)
    return BootPolicy({s: tuple(allowed[s]) for s in BOOT_STAGES if s in allowed})


def _list(pcrs: Sequence[int]) -> str:
    return ", ".join(map(str, pcrs))
