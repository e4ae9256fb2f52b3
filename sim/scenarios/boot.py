"""A simulated measured boot of a companion computer: UEFI firmware, then GRUB, then Linux.

:class:`BootChain` names the contents of each stage (firmware volume, bootloader, kernel, initrd,
command line, Secure Boot keys). From them it makes what a real boot leaves behind: the TCG PC
Client crypto-agile event log (:meth:`BootChain.log`, what Linux shows in
``/sys/kernel/security/tpm0/binary_bios_measurements``) and, through :func:`extend_pcrs`, the same
digests extended into a TPM's PCRs 0-9 with ESAPI ``PCR_Extend``, in the order firmware and GRUB
extend them:

- PCR 0: ``EV_S_CRTM_VERSION`` and the firmware volumes (``EV_EFI_PLATFORM_FIRMWARE_BLOB``);
- PCR 1: ``BootOrder`` and ``Boot0000`` (``EV_EFI_VARIABLE_BOOT``); PCR 7: ``SecureBoot``, PK, KEK,
  db, dbx, then the db certificate that verified the bootloader (``EV_EFI_VARIABLE_AUTHORITY``);
- PCR 4: "Calling EFI Application from Boot Option", then GRUB and the kernel's EFI stub
  (``EV_EFI_BOOT_SERVICES_APPLICATION``); PCR 5: the GPT and the ExitBootServices actions;
- ``EV_SEPARATOR`` into PCRs 0-7 between pre-boot and boot;
- PCR 8: GRUB's commands and ``kernel_cmdline: …`` (``EV_IPL``); PCR 9: the files GRUB reads
  (grub.cfg, kernel, initrd) as ``EV_IPL`` with their path.

A PE image's Authenticode hash is stood in for by the SHA-256 of its bytes (these images are not
PE files). Tests change one stage (``replace(chain, kernel=…)``) and get a consistent log and
PCRs, or extend one chain and ship another's log.

    with Swtpm() as tpm:
        log = boot(tpm, BootChain())
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attest import eventlog as ev

if TYPE_CHECKING:
    from sim.launchers.swtpm import Swtpm

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
ALGORITHMS: Mapping[int, str] = {ev.TPM_ALG_SHA1: "sha1", ev.TPM_ALG_SHA256: "sha256"}
_SIZES = {ev.TPM_ALG_SHA1: 20, ev.TPM_ALG_SHA256: 32}


@dataclass(frozen=True)
class SimEvent:
    """One measurement: what was hashed (``measured``) and what was logged beside it (``data``)."""

    pcr: int
    type: int
    measured: bytes
    data: bytes

    def digest(self, alg: int = ev.TPM_ALG_SHA256) -> bytes:
        return hashlib.new(ALGORITHMS[alg], self.measured).digest()


@dataclass(frozen=True)
class BootChain:
    """The named contents of each boot stage of a UEFI + GRUB + Linux companion."""

    firmware: bytes = b"FlightSeal companion UEFI firmware volume 1.0\x00" * 64
    firmware_version: str = "FS-COMPANION 1.0"
    bootloader: bytes = b"MZ grubaa64.efi 2.12 (stand-in PE image)\x00" * 128
    bootloader_path: str = "\\EFI\\debian\\grubaa64.efi"
    grub_cfg: bytes = (b"set root=(hd0,gpt2)\nlinux /boot/vmlinuz root=/dev/mmcblk0p2 ro quiet\n"
                       b"initrd /boot/initrd.img\n")
    kernel: bytes = b"MZ Linux 6.1.0-13-arm64 EFI stub (stand-in)\x00" * 256
    kernel_path: str = "/boot/vmlinuz-6.1.0-13-arm64"
    initrd: bytes = b"070701 initramfs 6.1.0-13-arm64 (stand-in)\x00" * 256
    initrd_path: str = "/boot/initrd.img-6.1.0-13-arm64"
    cmdline: str = "root=/dev/mmcblk0p2 ro quiet"
    secure_boot: bool = True
    db_cert: bytes = b"0\x82 FlightSeal companion db certificate (stand-in DER)"

    def events(self) -> list[SimEvent]:
        """Every measurement of this boot, in the order firmware and GRUB make them."""
        out = [SimEvent(0, ev.EV_S_CRTM_VERSION, _utf16(self.firmware_version), _utf16(self.firmware_version)),
               SimEvent(0, ev.EV_EFI_PLATFORM_FIRMWARE_BLOB, self.firmware,
                        struct.pack("<QQ", 0xFFC00000, len(self.firmware)))]
        out += [_config_variable(name, guid, value) for name, guid, value in self._secure_boot_variables()]
        out.append(_separator(7))
        boot0000 = struct.pack("<IH", 1, 0) + _utf16("debian") + _device_path(self.bootloader_path)
        out += [_boot_variable("BootOrder", struct.pack("<H", 0)), _boot_variable("Boot0000", boot0000)]
        out.append(_action(4, "Calling EFI Application from Boot Option"))
        out += [_separator(pcr) for pcr in range(7)]
        out.append(SimEvent(5, ev.EV_EFI_GPT_EVENT, _gpt(), _gpt()))
        if self.secure_boot:
            authority = _variable_data("db", EFI_IMAGE_SECURITY_DATABASE, self.db_cert)
            out.append(SimEvent(7, ev.EV_EFI_VARIABLE_AUTHORITY, authority, authority))
        out.append(_application(self.bootloader, self.bootloader_path))
        out.append(_file("/EFI/debian/grub.cfg", self.grub_cfg))
        out.append(_grub_command("set root=(hd0,gpt2)"))
        out.append(_grub_command(f"linux {self.kernel_path} {self.cmdline}"))
        out.append(_file(self.kernel_path, self.kernel))
        out.append(_application(self.kernel, self.kernel_path.replace("/", "\\")))
        out.append(_ipl_string(8, "kernel_cmdline: ", f"{self.kernel_path} {self.cmdline}"))
        out.append(_grub_command(f"initrd {self.initrd_path}"))
        out.append(_file(self.initrd_path, self.initrd))
        out += [_action(5, "Exit Boot Services Invocation"), _action(5, "Exit Boot Services Returned with Success")]
        return out

    def _secure_boot_variables(self) -> list[tuple[str, uuid.UUID, bytes]]:
        keys = [("PK", EFI_GLOBAL_VARIABLE, b"PK " + self.db_cert),
                ("KEK", EFI_GLOBAL_VARIABLE, b"KEK " + self.db_cert),
                ("db", EFI_IMAGE_SECURITY_DATABASE, self.db_cert), ("dbx", EFI_IMAGE_SECURITY_DATABASE, b"")]
        state = [("SecureBoot", EFI_GLOBAL_VARIABLE, bytes([int(self.secure_boot)]))]
        return state + (keys if self.secure_boot else [(n, g, b"") for n, g, _ in keys])

    def log(self, algorithms: Sequence[int] = (ev.TPM_ALG_SHA256,)) -> bytes:
        """The binary event log this boot leaves, with a digest per algorithm in ``algorithms``."""
        return log_of(self.events(), algorithms)


def log_of(events: Sequence[SimEvent], algorithms: Sequence[int] = (ev.TPM_ALG_SHA256,)) -> bytes:
    """A crypto-agile TCG event log of ``events``."""
    out = ev.pack_header({alg: _SIZES[alg] for alg in algorithms}, platform_class=0)
    for e in events:
        out += ev.pack_event2(e.pcr, e.type, {alg: e.digest(alg) for alg in algorithms}, e.data)
    return out


def extend_pcrs(tcti: str, events: Sequence[SimEvent]) -> None:
    """Extend each event's SHA-256 digest into its PCR, as firmware does (``tcti`` as in a key URI,
    e.g. ``swtpm:host=127.0.0.1,port=2321``)."""
    from tpm2_pytss import ESAPI, ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA, TCTILdr

    name, _, conf = tcti.partition(":")
    esapi = ESAPI(TCTILdr(name, conf))
    try:
        for e in events:
            if e.type == ev.EV_NO_ACTION:
                continue
            value = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=e.digest()))])
            esapi.pcr_extend(getattr(ESYS_TR, f"PCR{e.pcr}"), value)
    finally:
        esapi.close()


def boot(tpm: Swtpm, chain: BootChain | Sequence[SimEvent]) -> bytes:
    """Power-cycle ``tpm`` (its PCRs start again from zero), measure ``chain`` into it, return its log."""
    events = chain.events() if isinstance(chain, BootChain) else list(chain)
    power_cycle(tpm)
    extend_pcrs(tpm.tcti, events)
    return log_of(events)


def power_cycle(tpm: Swtpm) -> None:
    """An orderly reboot of the TPM: TPM2_Shutdown(CLEAR), stop swtpm, start it again on the same
    state with TPM2_Startup(CLEAR). Every PCR is back at its reset value, persistent keys stay, and
    the clock stays ``safe`` (a TPM stopped without TPM2_Shutdown reports it unsafe)."""
    from tpm2_pytss import ESAPI, TPM2_SU, TCTILdr

    name, _, conf = tpm.tcti.partition(":")
    esapi = ESAPI(TCTILdr(name, conf))
    try:
        esapi.shutdown(TPM2_SU.CLEAR)
    finally:
        esapi.close()
    tpm.pause()
    tpm.resume()


def _utf16(text: str) -> bytes:
    return (text + "\x00").encode("utf-16-le")


def _variable_data(name: str, guid: uuid.UUID, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: the variable's GUID, name length, data length, UTF-16 name, data."""
    return guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + name.encode("utf-16-le") + value


def _config_variable(name: str, guid: uuid.UUID, value: bytes) -> SimEvent:
    data = _variable_data(name, guid, value)
    return SimEvent(7, ev.EV_EFI_VARIABLE_DRIVER_CONFIG, data, data)


def _boot_variable(name: str, value: bytes) -> SimEvent:
    return SimEvent(1, ev.EV_EFI_VARIABLE_BOOT, value, _variable_data(name, EFI_GLOBAL_VARIABLE, value))


def _separator(pcr: int) -> SimEvent:
    return SimEvent(pcr, ev.EV_SEPARATOR, bytes(4), bytes(4))


def _action(pcr: int, text: str) -> SimEvent:
    return SimEvent(pcr, ev.EV_EFI_ACTION, text.encode(), text.encode())


def _device_path(path: str) -> bytes:
    """A media file-path device path node (type 4, subtype 4) and the end node."""
    name = _utf16(path)
    return struct.pack("<BBH", 4, 4, 4 + len(name)) + name + bytes([0x7F, 0xFF, 4, 0])


def _application(image: bytes, path: str) -> SimEvent:
    """UEFI_IMAGE_LOAD_EVENT: where the image was loaded, its length, and its device path."""
    dp = _device_path(path)
    data = struct.pack("<QQQQ", 0x7E000000, len(image), 0, len(dp)) + dp
    return SimEvent(4, ev.EV_EFI_BOOT_SERVICES_APPLICATION, image, data)


def _ipl_string(pcr: int, prefix: str, text: str) -> SimEvent:
    return SimEvent(pcr, ev.EV_IPL, text.encode(), (prefix + text).encode() + b"\x00")


def _grub_command(command: str) -> SimEvent:
    return _ipl_string(8, "grub_cmd: ", command)


def _file(path: str, content: bytes) -> SimEvent:
    return SimEvent(9, ev.EV_IPL, content, path.encode() + b"\x00")


def _gpt() -> bytes:
    """UEFI_GPT_DATA: the GPT header, then the number of partitions and their entries (an ESP and a root)."""
    header = b"EFI PART" + struct.pack("<IIIIQQQQ", 0x00010000, 92, 0, 0, 1, 0x1DFFFFF, 34, 0x1DFFFDE)
    header += uuid.UUID("5c6343e3-0000-4000-8000-00000000f15e").bytes_le + struct.pack("<QIII", 2, 128, 128, 0)
    entries = b""
    for i, (kind, first, last, label) in enumerate(((uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"), 2048,
                                                     526335, "EFI"),
                                                    (uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4"), 526336,
                                                     0x1DFFFDE, "root"))):
        entries += kind.bytes_le + uuid.UUID(int=i + 1).bytes_le + struct.pack("<QQQ", first, last, 0)
        entries += label.encode("utf-16-le").ljust(72, b"\x00")
    return header + struct.pack("<Q", 2) + entries
