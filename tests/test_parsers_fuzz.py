"""Property tests: parsers raise only the project's own errors on arbitrary input."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from attest import dsse, jsonio
from attest.errors import FlightSealError
from attest.evidence import Predicate
from attest.manifest import Manifest
from attest.root import Root
from attest.trust import TrustedState
from attest.verify import verify_attestation
from tests.factory import World

WORLD = World()
TRUST_BYTES = WORLD.root_bytes()
MANIFEST_BYTES = WORLD.manifest_bytes()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_envelope_parser_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(FlightSealError):
        dsse.Envelope.from_bytes(data, "x")


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_document_parsers_on_arbitrary_json(value: object) -> None:
    for parse in (Manifest.from_json, Root.from_json, Predicate.from_json):
        with contextlib.suppress(FlightSealError):
            parse(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1024))
def test_trust_state_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(FlightSealError):
        TrustedState(data)
    with contextlib.suppress(FlightSealError):
        TrustedState(TRUST_BYTES).verify_manifest(data, WORLD.now)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_verifier_never_passes_or_crashes_on_arbitrary_statements(value: object) -> None:
    payload = json.dumps(value).encode()
    env = dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, payload, [WORLD.device_key]).to_bytes()
    r = verify_attestation(env, trust=TrustedState(TRUST_BYTES), devices=[WORLD.device()],
                           manifest_bytes=MANIFEST_BYTES, nonce=bytes(32), now=WORLD.now)
    assert not r.passed
    assert r.reasons


def test_deeply_nested_json_is_refused() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    try:
        jsonio.loads(deep, "x", 10**6)
    except FlightSealError as exc:
        assert "nest" in str(exc) or "not valid JSON" in str(exc)
    else:
        raise AssertionError("deep nesting accepted")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=160))
def test_challenge_wire_parsers_on_arbitrary_bytes(data: bytes) -> None:
    from agent.mavlink import challenge_wire as wire

    with contextlib.suppress(FlightSealError):
        packet = wire.decode(data)
        for parse in (wire.parse_challenge, wire.parse_offer, wire.parse_chunk, wire.parse_resend):
            with contextlib.suppress(FlightSealError):
                parse(packet)
