"""The TCG boot event log parser (attest/eventlog.py): real-shaped logs parse and replay, hostile ones
raise FormatError and nothing else; tpm2-tools' own parser agrees with ours."""

from __future__ import annotations

import contextlib
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import eventlog as ev
from attest.errors import FormatError
from attest.limits import LIMITS
from sim.scenarios.boot import BootChain, SimEvent, log_of

LOG = BootChain().log()
EVENTS = BootChain().events()


def test_simulated_boot_log_parses_to_its_events() -> None:
    log = ev.parse(LOG)
    assert log.spec.algorithms == {ev.TPM_ALG_SHA256: 32}
    assert log.spec.version == (2, 0, 0)
    assert [(e.pcr, e.type, e.digest, e.data) for e in log.events] == [
        (s.pcr, s.type, s.digest(), s.data) for s in EVENTS]
    assert log.pcrs() == set(range(10))


def test_replay_extends_each_pcr_from_zero_in_log_order() -> None:
    import hashlib

    values = {i: bytes(32) for i in range(10)}
    for s in EVENTS:
        values[s.pcr] = hashlib.sha256(values[s.pcr] + s.digest()).digest()
    assert ev.parse(LOG).replay() == values


def test_a_log_with_sha1_and_sha256_digests_gives_the_same_sha256_events() -> None:
    both = ev.parse(BootChain().log((ev.TPM_ALG_SHA1, ev.TPM_ALG_SHA256)))
    assert both.spec.algorithms == {ev.TPM_ALG_SHA1: 20, ev.TPM_ALG_SHA256: 32}
    assert both.events == ev.parse(LOG).events


def test_no_action_events_are_not_extended_and_startup_locality_sets_pcr0() -> None:
    locality = SimEvent(0, ev.EV_NO_ACTION, b"", ev.STARTUP_LOCALITY_SIGNATURE + b"\x03")
    log = ev.parse(log_of([locality, *EVENTS]))
    assert log.startup_locality == 3
    plain = ev.parse(LOG).replay()
    replayed = log.replay()
    assert replayed[0] != plain[0] and {i: v for i, v in replayed.items() if i} == {
        i: v for i, v in plain.items() if i}
    assert ev.initial_value(0, 3) == bytes(31) + b"\x03"


def test_startup_locality_after_a_pcr0_measurement_is_refused() -> None:
    late = SimEvent(0, ev.EV_NO_ACTION, b"", ev.STARTUP_LOCALITY_SIGNATURE + b"\x03")
    with pytest.raises(FormatError, match="StartupLocality"):
        ev.parse(log_of([*EVENTS[:2], late]))


def _header_body(algs: bytes, count: int, vendor: bytes = b"") -> bytes:
    return ev.SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, count) + algs + bytes([len(vendor)]) + vendor


def _first_event(body: bytes, pcr: int = 0, kind: int = ev.EV_NO_ACTION) -> bytes:
    return struct.pack("<II", pcr, kind) + bytes(20) + struct.pack("<I", len(body)) + body


SHA256_ALG = struct.pack("<HH", ev.TPM_ALG_SHA256, 32)
HOSTILE: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "truncated"),
    "sha1-only log (no Spec ID header)": (_first_event(b"\x00" * 8, kind=ev.EV_S_CRTM_VERSION), "not the EV_NO_ACTION"),
    "old Spec ID signature": (_first_event(b"Spec ID Event02\x00" + bytes(20)), "Spec ID Event03"),
    "no SHA-256 bank": (_first_event(_header_body(struct.pack("<HH", ev.TPM_ALG_SHA1, 20), 1)), "no SHA-256"),
    "zero algorithms": (_first_event(_header_body(b"", 0)), "digest algorithms"),
    "a billion algorithms": (_first_event(_header_body(SHA256_ALG, 10**9)), "digest algorithms"),
    "digest size 0xffff": (_first_event(_header_body(struct.pack("<HH", ev.TPM_ALG_SHA256, 0xFFFF), 1)),
                           "digest size"),
    "algorithm twice": (_first_event(_header_body(SHA256_ALG * 2, 2)), "listed twice"),
    "bytes after the header": (_first_event(_header_body(SHA256_ALG, 1) + b"junk"), "unexpected bytes"),
    "header event size past the end": (LOG[:28] + struct.pack("<I", 2**32 - 1) + LOG[32:200], "truncated"),
    "PCR 24": (ev.pack_header({ev.TPM_ALG_SHA256: 32}) + ev.pack_event2(24, ev.EV_IPL, {ev.TPM_ALG_SHA256: bytes(32)},
                                                                        b""), "PCR 24"),
    "more digests than algorithms": (ev.pack_header({ev.TPM_ALG_SHA256: 32}) + struct.pack(
        "<III", 0, ev.EV_IPL, 2) + (struct.pack("<H", ev.TPM_ALG_SHA256) + bytes(32)) * 2 + struct.pack("<I", 0),
                                     "2 digests"),
    "digest of an algorithm not in the header": (ev.pack_header({ev.TPM_ALG_SHA256: 32}) + ev.pack_event2(
        0, ev.EV_IPL, {ev.TPM_ALG_SHA1: bytes(20)}, b""), "not in the header"),
    "event without a SHA-256 digest": (ev.pack_header({ev.TPM_ALG_SHA1: 20, ev.TPM_ALG_SHA256: 32}) + ev.pack_event2(
        0, ev.EV_IPL, {ev.TPM_ALG_SHA1: bytes(20)}, b""), "no SHA-256 digest"),
    "event size 4 GiB": (ev.pack_header({ev.TPM_ALG_SHA256: 32}) + struct.pack("<III", 0, ev.EV_IPL, 1)
                         + struct.pack("<H", ev.TPM_ALG_SHA256) + bytes(32) + struct.pack("<I", 2**32 - 1),
                         "truncated"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_log_is_refused_with_a_format_error(name: str) -> None:
    data, why = HOSTILE[name]
    with pytest.raises(FormatError, match=why):
        ev.parse(data)


def test_a_log_larger_than_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(FormatError, match="allowed"):
        ev.parse(LOG + bytes(LIMITS.max_boot_log_bytes))


def test_more_events_than_the_bound_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "MAX_EVENTS", 5)
    with pytest.raises(FormatError, match="more than 5 events"):
        ev.parse(LOG)


def test_a_log_cut_anywhere_is_refused_or_is_a_prefix_of_the_events() -> None:
    full = ev.parse(LOG).events
    for n in range(len(LOG)):
        try:
            cut = ev.parse(LOG[:n])
        except FormatError:
            continue
        assert cut.events == full[:len(cut.events)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, len(LOG) - 1), st.binary(min_size=1, max_size=8))
def test_garbage_and_flipped_bytes_raise_only_format_errors(garbage: bytes, at: int, patch: bytes) -> None:
    for data in (garbage, ev.pack_header({ev.TPM_ALG_SHA256: 32}) + garbage, LOG[:at] + patch + LOG[at + len(patch):]):
        with contextlib.suppress(FormatError):
            ev.parse(data)


def _tpm2_eventlog(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(data)
    done = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, timeout=30, check=False, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("tpm2_eventlog") is None, reason="tpm2-tools not installed")
@pytest.mark.parametrize("algs", [(ev.TPM_ALG_SHA256,), (ev.TPM_ALG_SHA1, ev.TPM_ALG_SHA256)])
def test_tpm2_eventlog_reads_the_same_events_and_replays_the_same_pcrs(tmp_path: Path, algs: tuple[int, ...]) -> None:
    data = BootChain().log(algs)
    out = _tpm2_eventlog(data, tmp_path)
    ours = ev.parse(data)
    types = re.findall(r"^  EventType: (\S+)$", out, re.M)
    assert types == ["EV_NO_ACTION"] + [e.type_name for e in ours.events]
    sha256 = re.findall(r"AlgorithmId: sha256\n    Digest: \"([0-9a-f]{64})\"", out)
    assert sha256 == [e.digest.hex() for e in ours.events]
    bank = out.split("\npcrs:\n", 1)[1].split("  sha256:\n", 1)[1]
    theirs = {int(i): bytes.fromhex(v) for i, v in re.findall(r"^    (\d+)\s*: 0x([0-9a-f]{64})$", bank, re.M)[:24]}
    assert theirs == ours.replay()


@pytest.mark.skipif(shutil.which("tpm2_eventlog") is None, reason="tpm2-tools not installed")
def test_a_log_tpm2_eventlog_refuses_is_refused_by_us_too(tmp_path: Path) -> None:
    cut = LOG[:len(LOG) - 7]
    path = tmp_path / "cut"
    path.write_bytes(cut)
    done = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, timeout=30, check=False)
    assert done.returncode != 0
    with pytest.raises(FormatError, match="truncated"):
        ev.parse(cut)
