"""The offline quote checker (attest/quote.py), property by property.

A real TPM cannot be made to sign an unsafe clock or a wrong magic, so these tests build
TPMS_ATTEST bytes themselves and sign them like a TPM does (ECDSA-SHA256 over the bytes) with a
software key standing in for the enrolled AK. Quotes from a real swtpm are checked in
test_tpm_attestation.py.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.enrollment import DeviceRecord
from attest.errors import FormatError
from attest.evidence import Predicate, statement_digest
from attest.keys import KeyKind
from attest.models import Code, Kind, Measurement, Strength, Verdict
from attest.quote import (
    AGENT_PCR,
    AGENT_START,
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    AgentEvent,
    Attest,
    ClockInfo,
    PcrSelection,
    Quote,
    check_predicate_quote,
    check_quote,
    observed_clock,
    parse_attest,
    pcr_digest,
    replay,
)
from hardware.software import SoftwareSigner

AK = SoftwareSigner.generate()
QUALIFYING = hashlib.sha256(b"statement").digest()
MEASUREMENTS = [
    Measurement("fc.firmware-image", Kind.FIRMWARE_IMAGE, {"sha256": "ab" * 32}, "bootloader:/dev/ttyACM0",
                Strength.IMAGE_AND_BOOTLOADER, {"board_id": 9}),
    Measurement("fc.params", Kind.PARAMS, {"sha256": "cd" * 32}, "mavlink-ftp", Strength.SELF_REPORTED),
    Measurement("companion.agent", Kind.COMPANION, {"sha256": "a9" * 32}, "companion:installed-files",
                Strength.SELF_REPORTED),
]
START = AgentEvent(AGENT_START, bytes.fromhex("a9" * 32))
EVENTS = [START, START]  # the agent started twice since boot, the same build both times
CLOCK = ClockInfo(clock=50_000, reset_count=4, restart_count=1, safe=True)


def make_quote(*, signer: SoftwareSigner = AK, qualifying: bytes = QUALIFYING, events: list[AgentEvent] | None = None,
               values: dict[int, bytes] | None = None, selection: tuple[PcrSelection, ...] | None = None,
               clock: ClockInfo = CLOCK, magic: int = TPM_GENERATED_VALUE, kind: int = TPM_ST_ATTEST_QUOTE,
               reported: dict[int, bytes] | None = None, reported_events: list[AgentEvent] | None = None,
               agent_pcr: int = AGENT_PCR) -> dict[str, Any]:
    """A quote as a TPM would make it; ``reported*`` lets a test lie in the unsigned part."""
    events = EVENTS if events is None else events
    values = values or {0: b"\x11" * 32, 7: b"\x77" * 32, agent_pcr: replay([e.value for e in events])}
    selection = selection or (PcrSelection(TPM_ALG_SHA256, tuple(sorted(values))),)
    attest = Attest(magic, kind, b"\x00\x0b" + b"\x42" * 32, qualifying, clock, 0x2023_0001_0000_0000, selection,
                    pcr_digest(selection, values))
    raw = attest.to_bytes()
    return Quote(raw, signer.sign(raw), reported if reported is not None else values,
                 tuple(reported_events if reported_events is not None else events), agent_pcr).to_json()


def codes(quote: dict[str, Any], *, measurements: list[Measurement] | None = None,
          last: ClockInfo | None = None) -> set[Code]:
    reasons = check_quote(quote, key=AK.public_key, qualifying=QUALIFYING,
                          measurements=MEASUREMENTS if measurements is None else measurements, last_clock=last)
    return {r.code for r in reasons}


def test_a_quote_of_these_measurements_by_the_enrolled_key_passes() -> None:
    assert codes(make_quote()) == set()


def test_quote_signed_by_another_key_is_refused() -> None:
    assert codes(make_quote(signer=SoftwareSigner.generate())) == {Code.QUOTE_SIGNATURE}


def test_quote_made_for_another_statement_or_nonce_is_refused() -> None:
    assert codes(make_quote(qualifying=hashlib.sha256(b"other nonce").digest())) == {Code.QUOTE_QUALIFYING_DATA}


@pytest.mark.parametrize("magic,kind", [(0xFF544348, TPM_ST_ATTEST_QUOTE), (0x00000000, TPM_ST_ATTEST_QUOTE),
                                        (TPM_GENERATED_VALUE, 0x8017), (TPM_GENERATED_VALUE, 0x8014)])
def test_structure_that_is_not_a_tpm_quote_is_invalid(magic: int, kind: int) -> None:
    assert codes(make_quote(magic=magic, kind=kind)) == {Code.QUOTE_INVALID}


def test_unsafe_tpm_clock_is_refused() -> None:
    assert codes(make_quote(clock=replace(CLOCK, safe=False))) == {Code.QUOTE_CLOCK_UNSAFE}


@pytest.mark.parametrize("last", [
    replace(CLOCK, reset_count=5, restart_count=0, clock=1),  # a later boot was seen already: counters went back
    replace(CLOCK, reset_count=3, clock=99_999),  # safe clock is never below one reported before
    replace(CLOCK, restart_count=2, clock=1),
    replace(CLOCK, clock=CLOCK.clock + 1),  # same boot, older clock: a replayed quote
])
def test_counters_or_clock_going_back_from_last_seen_is_rollback(last: ClockInfo) -> None:
    assert codes(make_quote(), last=last) == {Code.QUOTE_COUNTER_ROLLBACK}


@pytest.mark.parametrize("last", [CLOCK, replace(CLOCK, reset_count=3, restart_count=9, clock=49_000),
                                  replace(CLOCK, restart_count=0, clock=49_999)])
def test_counters_equal_or_moving_forward_pass(last: ClockInfo) -> None:
    assert codes(make_quote(), last=last) == set()


def test_reported_pcr_value_that_was_not_quoted_is_refused() -> None:
    good = {0: b"\x11" * 32, 7: b"\x77" * 32, AGENT_PCR: replay([e.value for e in EVENTS])}
    lie = {**good, 7: b"\x00" * 32}  # e.g. hiding a changed boot-loader measurement
    assert codes(make_quote(values=good, reported=lie)) == {Code.QUOTE_PCR_DIGEST}


def test_reported_pcrs_must_be_exactly_the_signed_selection() -> None:
    good = {0: b"\x11" * 32, 7: b"\x77" * 32, AGENT_PCR: replay([e.value for e in EVENTS])}
    fewer = {k: v for k, v in good.items() if k != 7}
    assert codes(make_quote(values=good, reported=fewer)) == {Code.QUOTE_PCR_SELECTION}


def test_quote_without_the_agent_pcr_is_refused() -> None:
    values = {0: b"\x11" * 32, 7: b"\x77" * 32}
    got = codes(make_quote(values=values))
    assert Code.QUOTE_PCR_SELECTION in got


def test_quote_over_another_bank_is_refused() -> None:
    values = {0: b"\x11" * 32, AGENT_PCR: replay([e.value for e in EVENTS])}
    sel = (PcrSelection(0x0004, (0, AGENT_PCR)),)  # SHA-1
    assert codes(make_quote(values=values, selection=sel)) == {Code.QUOTE_PCR_SELECTION}


def test_an_agent_log_that_does_not_replay_to_the_quoted_pcr_is_refused() -> None:
    """A lost or edited log, or another process extending the agent PCR."""
    got = codes(make_quote(reported_events=EVENTS[:1]))
    assert got == {Code.QUOTE_EVENT_LOG}


def test_a_reset_agent_pcr_is_caught() -> None:
    """The PCR read zero (as after a reset, which the OS cannot do to PCR 13; a TPM reset resets the log too)
    while the log claims start-ups: refused."""
    values = {0: b"\x11" * 32, 7: b"\x77" * 32, AGENT_PCR: bytes(32)}
    assert codes(make_quote(values=values)) == {Code.QUOTE_EVENT_LOG}


def test_another_agent_build_started_since_boot_is_named() -> None:
    other = AgentEvent(AGENT_START, bytes.fromhex("66" * 32))
    assert codes(make_quote(events=[other, START])) == {Code.AGENT_PCR_HISTORY}


def test_a_resettable_pcr_as_agent_pcr_is_refused() -> None:
    """PCR 23 (format v1's) and 16 can be reset by any local process: not a place for the agent's record."""
    for pcr in (16, 23):
        assert Code.QUOTE_PCR_SELECTION in codes(make_quote(agent_pcr=pcr))


def test_an_agent_event_of_one_kind_cannot_pass_for_another() -> None:
    assert START.value != hashlib.sha256(START.digest).digest()
    assert START.value != AgentEvent("agent-stop", START.digest).value


def test_format_v1_is_refused_naming_why() -> None:
    q = make_quote()
    q["format"] = "flightseal/tpm2-quote/v1"
    reasons = check_quote(q, key=AK.public_key, qualifying=QUALIFYING, measurements=MEASUREMENTS)
    assert [r.code for r in reasons] == [Code.QUOTE_INVALID] and "PCR 23" in reasons[0].detail


@pytest.mark.parametrize("mutate", [
    lambda q: q.pop("signature"),
    lambda q: q.update(extra=1),
    lambda q: q.update(attest="zz"),
    lambda q: q.update(attest=q["attest"] + "00"),  # trailing byte after the quote
    lambda q: q.update(attest=q["attest"][:-2]),
    lambda q: q.update(pcr_bank="sha1"),
    lambda q: q.update(format="tpm2-quote/v0"),
    lambda q: q.update(pcrs={"24": "00" * 32}),
    lambda q: q.update(pcrs={"07": "00" * 32}),
    lambda q: q.update(agent_log=[{"kind": "agent-start", "digest": "00" * 31}]),
    lambda q: q.update(agent_log=[{"kind": "agent-start", "digest": "00" * 32}] * 2000),
    lambda q: q.update(agent_log=[{"kind": "agent-stop", "digest": "00" * 32}]),
    lambda q: q.update(boot_event_log="not base64!"),
    lambda q: q.update(signature="30" * 100),
])
def test_malformed_quote_json_is_one_invalid_reason(mutate: Any) -> None:
    q = make_quote()
    mutate(q)
    reasons = check_quote(q, key=AK.public_key, qualifying=QUALIFYING, measurements=MEASUREMENTS)
    assert [r.code for r in reasons] == [Code.QUOTE_INVALID]


def test_observed_clock_is_what_the_tpm_signed() -> None:
    assert observed_clock(make_quote()) == CLOCK


selections = st.lists(st.builds(PcrSelection, st.integers(0, 0xFFFF),
                                st.lists(st.integers(0, 23), unique=True).map(lambda xs: tuple(sorted(xs))),
                                st.just(3)), max_size=4).map(tuple)
attests = st.builds(Attest, st.just(TPM_GENERATED_VALUE), st.just(TPM_ST_ATTEST_QUOTE), st.binary(max_size=66),
                    st.binary(max_size=64),
                    st.builds(ClockInfo, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
                              st.integers(0, 2**32 - 1), st.booleans()),
                    st.integers(0, 2**64 - 1), selections, st.binary(max_size=64))


@given(attests)
def test_attest_bytes_round_trip(attest: Attest) -> None:
    assert parse_attest(attest.to_bytes()) == attest


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_attest_bytes_raise_only_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_attest(data)


@settings(max_examples=200)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_corrupted_real_layout_raises_only_format_error(pos: int, junk: bytes) -> None:
    raw = bytearray(bytes.fromhex(make_quote()["attest"]))
    pos %= len(raw)
    raw[pos:pos + len(junk)] = junk
    with contextlib.suppress(FormatError):
        parse_attest(bytes(raw))


def test_oversized_fields_are_refused_before_reading_them() -> None:
    raw = bytearray(bytes.fromhex(make_quote()["attest"]))
    raw[6:8] = (0xFFFF).to_bytes(2, "big")  # qualifiedSigner claims 65535 bytes
    with pytest.raises(FormatError, match="qualifiedSigner"):
        parse_attest(bytes(raw))
    with pytest.raises(FormatError, match="more than"):
        parse_attest(b"\xff" * 5000)


def test_quote_from_a_device_whose_key_is_not_in_a_tpm_is_refused() -> None:
    """A PKCS#11 or software key can sign a made-up TPMS_ATTEST; only a restricted TPM key cannot."""
    p = Predicate("d1", "FS-Quad-1", KeyKind.PKCS11, bytes(32), datetime(2026, 1, 1, tzinfo=UTC), None,
                  tuple(MEASUREMENTS), Verdict(True))
    p = replace(p, quote=make_quote(qualifying=statement_digest(p)))
    as_pkcs11 = DeviceRecord("d1", "FS-Quad-1", AK.public_key, KeyKind.PKCS11)
    as_tpm = replace(as_pkcs11, key_kind=KeyKind.TPM)
    assert check_predicate_quote(p, as_tpm) == []
    assert [r.code for r in check_predicate_quote(p, as_pkcs11)] == [Code.QUOTE_INVALID]
    assert [r.code for r in check_predicate_quote(replace(p, quote=None), as_tpm)] == [Code.QUOTE_MISSING]
