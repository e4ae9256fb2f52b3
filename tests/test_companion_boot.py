"""Golden values for the companion's boot, end to end on a real swtpm (ADR 0019).

A simulated UEFI + GRUB boot (sim/scenarios/boot.py) is measured into the TPM's PCRs 0-9 with its event
log; the agent's sealing path quotes with the TPM key and carries the log; the offline verifier
replays the log against the quoted PCRs and judges each stage against the signed manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.attestation import check_manifest, seal_measurements, with_boot_log
from agent.cli.main import main
from agent.cli.manifest import read_manifest, write_manifest
from attest import eventlog, timeutil
from attest.boot import policy_from_log
from attest.enrollment import DeviceRecord
from attest.keys import KeyKind
from attest.manifest import BootPolicy, Manifest
from attest.models import Code
from attest.tpm_evidence import load_cas
from attest.verify import VerificationResult, verify_attestation
from hardware.quote_check import default_quote_checker
from hardware.tpm import TpmSigner, create_key
from hardware.tpm_credential import prove_bench
from hardware.uri import quoter_for
from sim.launchers.swtpm import Swtpm
from sim.scenarios.boot import BootChain, SimEvent, boot, extend_pcrs, power_cycle
from tests.factory import World, measurements

NONCE = bytes.fromhex("c3" * 32)
GOOD = BootChain()
NEW_KERNEL = replace(GOOD, kernel=b"MZ Linux 6.1.0-15-arm64 EFI stub (stand-in)\x00" * 256,
                     kernel_path="/boot/vmlinuz-6.1.0-15-arm64")
GOLDEN = policy_from_log(eventlog.parse(GOOD.log()))
ALTERED: dict[str, tuple[BootChain, bytes]] = {  # stage -> (a boot with that stage changed, what was measured)
    "firmware": (replace(GOOD, firmware=b"patched firmware volume" * 64), b"patched firmware volume" * 64),
    "bootloader": (replace(GOOD, bootloader=b"MZ evil grub" * 128), b"MZ evil grub" * 128),
    "kernel": (replace(GOOD, kernel=b"MZ rootkit kernel" * 256), b"MZ rootkit kernel" * 256),
    "initrd": (replace(GOOD, initrd=b"070701 backdoored initramfs" * 256), b"070701 backdoored initramfs" * 256),
    "cmdline": (replace(GOOD, cmdline="root=/dev/mmcblk0p2 rw init=/bin/sh"),
                b"/boot/vmlinuz-6.1.0-13-arm64 root=/dev/mmcblk0p2 rw init=/bin/sh"),
}


@pytest.fixture(scope="module")
def tpm() -> Iterator[Swtpm]:
    """A swtpm of our own: these tests power-cycle it to start each boot from PCRs at zero."""
    missing = [t for t in ("swtpm", "swtpm_setup", "swtpm_localca") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install.sh installs it)")
    with Swtpm(ek_cert=True) as t:
        yield t


@dataclass
class Companion:
    tpm: Swtpm
    uri: str
    record: DeviceRecord
    world: World
    tmp: Path

    def attest(self, log: bytes | None, policy: BootPolicy | None = GOLDEN) -> VerificationResult:
        """One pass through the agent's sealing path with this boot log, verified offline."""
        path = self.tmp / "binary_bios_measurements"
        path.unlink(missing_ok=True)
        if log is not None:
            path.write_bytes(log)
        manifest = self.world.manifest_bytes(companion_boot=policy)
        ms = measurements()
        with TpmSigner.open(self.uri) as signer:
            sealed = seal_measurements(ms, check_manifest(self.world.trust(), manifest, self.world.now), signer,
                                       device_id="drone-001", airframe="FS-Quad-1", nonce=NONCE, now=self.world.now,
                                       quoter=with_boot_log(quoter_for(signer, ms), path))
        assert sealed.verdict.passed  # the agent does not judge its own boot: the verifier does
        return verify_attestation(sealed.envelope.to_bytes(), trust=self.world.trust(), devices=[self.record],
                                  manifest_bytes=manifest, nonce=NONCE, now=self.world.now,
                                  quote_checker=default_quote_checker())


@pytest.fixture
def companion(tpm: Swtpm, tmp_path: Path) -> Iterator[Companion]:
    handle = 0x81010180
    signer = create_key(tpm.key_uri(handle))
    uri = str(signer.uri)
    signer.close()
    cas = [c for f in tpm.ek_ca_certs for c in load_cas(f.read_bytes(), str(f))]
    proven = prove_bench(uri, cas, timeutil.now())
    with TpmSigner.open(uri) as s:
        record = DeviceRecord("drone-001", "FS-Quad-1", s.public_key, KeyKind.TPM, tpm_ak_name=s.ak_name,
                              tpm_ek_name=proven.ek_name, tpm_evidence=proven.evidence)
    yield Companion(tpm, uri, record, World(), tmp_path)
    tpm.evict(handle)


def codes(result: VerificationResult) -> set[Code]:
    return {r.code for r in result.reasons}


def test_a_good_boot_passes_and_the_quote_carries_its_log(companion: Companion) -> None:
    log = boot(companion.tpm, GOOD)
    result = companion.attest(log)
    assert result.passed, result.reasons
    assert result.predicate is not None and result.predicate.quote is not None
    assert result.predicate.quote["boot_event_log"]  # in the signed statement


@pytest.mark.parametrize("stage", sorted(ALTERED))
def test_each_altered_boot_stage_is_refused_naming_the_stage_and_digest(companion: Companion, stage: str) -> None:
    chain, measured = ALTERED[stage]
    result = companion.attest(boot(companion.tpm, chain))
    assert codes(result) == {Code.COMPANION_BOOT_UNKNOWN}, result.reasons
    named = {r.component for r in result.reasons}
    assert f"companion.boot:{stage}" in named
    digest = hashlib.sha256(measured).hexdigest()
    assert any(r.component == f"companion.boot:{stage}" and digest in r.detail for r in result.reasons)
    # only the stage changed is named (a changed command line also changes GRUB's `linux` command)
    also = {"companion.boot:bootloader-config"} if stage == "cmdline" else set()
    assert named <= {f"companion.boot:{stage}"} | also


def test_a_log_of_the_approved_boot_from_a_companion_that_booted_another_kernel_is_refused(
        companion: Companion) -> None:
    boot(companion.tpm, ALTERED["kernel"][0])
    result = companion.attest(GOOD.log())  # the lie: the golden log, shipped beside other PCRs
    assert codes(result) == {Code.COMPANION_BOOT_LOG_MISMATCH}, result.reasons
    assert "4, 9" in result.reasons[0].detail


def test_a_pcr_reset_after_boot_is_caught(companion: Companion) -> None:
    log = boot(companion.tpm, GOOD)
    power_cycle(companion.tpm)  # PCRs 0-9 back to zero; the log still tells of a boot
    assert codes(companion.attest(log)) == {Code.COMPANION_BOOT_LOG_MISMATCH}


def test_a_measurement_extended_without_a_log_entry_is_caught(companion: Companion) -> None:
    log = boot(companion.tpm, GOOD)
    extend_pcrs(companion.tpm.tcti, [SimEvent(9, eventlog.EV_IPL, b"a module loaded quietly", b"")])
    result = companion.attest(log)
    assert codes(result) == {Code.COMPANION_BOOT_LOG_MISMATCH}
    assert "PCR(s) 9" in result.reasons[0].detail


def test_no_log_is_refused_when_the_manifest_has_golden_boot_values(companion: Companion) -> None:
    boot(companion.tpm, GOOD)
    assert codes(companion.attest(None)) == {Code.COMPANION_BOOT_LOG_MISSING}


def test_a_manifest_without_boot_values_does_not_appraise_the_boot(companion: Companion) -> None:
    result = companion.attest(boot(companion.tpm, ALTERED["kernel"][0]), policy=None)
    assert result.passed, result.reasons
    assert "not appraised" in World().manifest().describe_boot()


def test_a_manifest_approving_two_kernels_passes_both(companion: Companion) -> None:
    both = GOLDEN.merged(policy_from_log(eventlog.parse(NEW_KERNEL.log())))
    assert len(both.digests("kernel")) == 2  # in PCR 4 (EFI stub) and PCR 9 (file): the same bytes here
    for chain in (GOOD, NEW_KERNEL):
        result = companion.attest(boot(companion.tpm, chain), policy=both)
        assert result.passed, result.reasons
    assert codes(companion.attest(boot(companion.tpm, NEW_KERNEL))) == {Code.COMPANION_BOOT_UNKNOWN}


def _baseline(path: Path, *args: str) -> Manifest:
    r = CliRunner().invoke(main, ["manifest", "baseline", str(path), *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return read_manifest(path)[1]


def test_manifest_baseline_from_a_reference_boot_log_then_rolling_a_kernel_update(companion: Companion,
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "ref.bin").write_bytes(GOOD.log())
    (tmp_path / "new.bin").write_bytes(NEW_KERNEL.log())
    path = tmp_path / "manifest.json"
    write_manifest(path, companion.world.manifest())
    first = _baseline(path, "--boot-log", str(tmp_path / "ref.bin"))
    assert first.version == 4 and first.companion_boot == GOLDEN
    assert first.firmware == companion.world.manifest().firmware  # nothing but the boot section changed
    rolled = _baseline(path, "--add-boot-log", str(tmp_path / "new.bin"))
    assert rolled.version == 5 and rolled.companion_boot is not None
    assert set(GOLDEN.digests("kernel")) < set(rolled.companion_boot.digests("kernel"))
    for chain in (GOOD, NEW_KERNEL):
        result = companion.attest(boot(companion.tpm, chain), policy=rolled.companion_boot)
        assert result.passed, result.reasons
    replaced = _baseline(path, "--boot-log", str(tmp_path / "new.bin"))  # retire the old kernel
    assert codes(companion.attest(boot(companion.tpm, GOOD), policy=replaced.companion_boot)) == {
        Code.COMPANION_BOOT_UNKNOWN}


def test_manifest_baseline_refuses_a_file_that_is_not_an_event_log(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_manifest(path, World().manifest())
    (tmp_path / "junk.bin").write_bytes(b"not an event log at all" * 4)
    r = CliRunner().invoke(main, ["manifest", "baseline", str(path), "--boot-log", str(tmp_path / "junk.bin")])
    assert r.exit_code == 2 and "junk.bin" in r.output
    assert read_manifest(path)[1].version == 3  # nothing written


def test_flightseal_attest_and_verify_name_an_unknown_kernel(companion: Companion, tmp_path: Path) -> None:
    """The CLI end to end: `flightseal attest --boot-event-log` on the companion, `flightseal verify` on the ground."""
    world = World(now=timeutil.now())
    trust = tmp_path / "trust"
    (trust / "devices").mkdir(parents=True)
    (trust / "root.json").write_bytes(world.root_bytes())
    (trust / "manifest.json").write_bytes(world.manifest_bytes(companion_boot=GOLDEN))
    (trust / "devices" / "drone-001.json").write_bytes(world.enrollment_bytes(companion.record))
    (tmp_path / "meas.json").write_text(json.dumps([m.to_json() for m in measurements()]))
    runner = CliRunner()

    def attest_and_verify(chain: BootChain) -> str:
        (tmp_path / "log.bin").write_bytes(boot(companion.tpm, chain))
        r = runner.invoke(main, ["attest", "--measurements", str(tmp_path / "meas.json"), "--manifest",
                                 str(trust / "manifest.json"), "--root", str(trust / "root.json"), "--key",
                                 companion.uri, "--device-id", "drone-001", "--airframe", "FS-Quad-1", "--nonce",
                                 NONCE.hex(), "--boot-event-log", str(tmp_path / "log.bin"), "-o",
                                 str(tmp_path / "att.json")], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        r = runner.invoke(main, ["verify", str(tmp_path / "att.json"), "--trust", str(trust), "--nonce",
                                 NONCE.hex()], catch_exceptions=False)
        return f"{r.exit_code}\n{r.output}"

    good = attest_and_verify(GOOD)
    assert good.startswith("0\nPASS device drone-001"), good
    assert "companion boot appraised against its event log" in good
    bad = attest_and_verify(ALTERED["kernel"][0])
    assert bad.startswith("1\n") and "FAIL companion-boot-unknown [companion.boot:kernel]: kernel sha256 " in bad


# The policy alone, without a TPM: classification and judging rules of attest/boot.py.

def _log(*events: SimEvent) -> eventlog.EventLog:
    from sim.scenarios.boot import log_of

    return eventlog.parse(log_of(events))


def test_u_boot_bootm_events_are_classified_by_their_names() -> None:
    from attest.boot import classify

    log = _log(SimEvent(8, eventlog.EV_COMPACT_HASH, b"Image", b"linux\x00"),
               SimEvent(9, eventlog.EV_COMPACT_HASH, b"rootfs.cpio", b"initrd\x00"),
               SimEvent(1, eventlog.EV_PLATFORM_CONFIG_FLAGS, b"console=ttyS0", b"bootargs\x00"),
               SimEvent(0, eventlog.EV_TABLE_OF_DEVICES, b"dtb", b"dts\x00"))
    assert [e.stage for e in classify(log)] == ["kernel", "initrd", "cmdline", "platform-config"]


def test_an_approved_stage_absent_from_the_log_is_named_and_an_unjudged_stage_is_not_judged() -> None:
    from attest.boot import classify, judge

    without_initrd = [e for e in classify(eventlog.parse(GOOD.log())) if e.stage != "initrd"]
    assert {r.code for r in judge(without_initrd, GOLDEN)} == {Code.COMPANION_BOOT_STAGE_MISSING}
    other = classify(eventlog.parse(ALTERED["kernel"][0].log()))
    assert judge(other, BootPolicy(GOLDEN.allowed, ("kernel",))) == []
    assert "not judged: kernel" in BootPolicy(GOLDEN.allowed, ("kernel",)).describe()


def test_a_flood_of_unknown_events_gives_a_bounded_number_of_reasons() -> None:
    from attest.boot import MAX_REASONS_PER_STAGE, classify, judge

    flood = _log(*[SimEvent(9, eventlog.EV_IPL, bytes([i]), b"/boot/vmlinuz\x00") for i in range(200)])
    kernel = [r for r in judge(classify(flood), GOLDEN) if r.component == "companion.boot:kernel"]
    assert len(kernel) == MAX_REASONS_PER_STAGE + 1 and "192 more" in kernel[-1].detail


def test_a_quote_that_cannot_be_read_or_is_absent_is_named() -> None:
    from attest.boot import appraise_boot

    assert {r.code for r in appraise_boot(None, GOLDEN)} == {Code.COMPANION_BOOT_LOG_MISSING}
    assert {r.code for r in appraise_boot({"format": "x"}, GOLDEN)} == {Code.COMPANION_BOOT_LOG_INVALID}
    assert appraise_boot(None, None) == []


def test_the_boot_section_round_trips_and_matches_the_published_schema() -> None:
    import jsonschema

    from attest.errors import FormatError
    from tests.test_schemas import schema

    data = World().manifest(companion_boot=GOLDEN).to_json()
    jsonschema.validate(data, schema("manifest.schema.json"))
    assert Manifest.from_json(data).companion_boot == GOLDEN
    data["companion"]["boot"]["kernels"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema("manifest.schema.json"))
    with pytest.raises(FormatError, match=r"companion\.boot\.kernels"):
        Manifest.from_json(data)
