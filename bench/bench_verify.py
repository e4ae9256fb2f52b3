"""Benchmark: full offline verification of an attestation with 50 measurements, per second,
beside raw ECDSA P-256 verifications per second measured in the same run.

Run: .venv/bin/python -m bench.bench_verify [--seconds 3]
Target (issue 2): ratio (full verifications / raw ECDSA verifications) >= 0.5.

Beside the full verifier it times floors that do less than a verifier must, so every run shows
how far the format itself lets any CPython verifier go (ADR 0008):

- *stdlib floor*: parse the envelope, base64-decode, check the one signature, ``json.loads`` the
  statement, and nothing else (no schema, no duplicate keys, no appraisal);
- *compiled floor*: the same with msgspec, a compiled decoder (C base64, C JSON), still no checks;
- *appraisal*: re-appraising the 50 already-parsed measurements against the cached manifest,
  which a verifier that never trusts the device's verdict cannot skip.

"compiled floor + appraisal" still leaves out the schema and duplicate-key checks, so no CPython
verifier of this format built on the fastest decoder measured here can beat it.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import time
from collections.abc import Callable

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.attestation import check_manifest, seal_measurements
from attest import dsse
from attest.appraise import appraise
from attest.evidence import parse_statement
from attest.models import Kind, Measurement, Strength
from attest.verify import VerifierPolicy, verify_attestation
from tests.factory import World, measurements

TARGET = 0.5


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def fifty_measurements() -> list[Measurement]:
    ms = measurements()
    extra = 50 - len(ms)
    ms += [Measurement(f"fc.script:scripts/s{i}.lua", Kind.SCRIPT, {"sha256": secrets.token_hex(32)}, "mavlink-ftp",
                       Strength.SELF_REPORTED, {"path": f"scripts/s{i}.lua"}) for i in range(extra)]
    return ms


class _Sig(msgspec.Struct):
    keyid: str
    sig: bytes


class _Envelope(msgspec.Struct):
    payloadType: str  # DSSE spells it so
    payload: bytes
    signatures: list[_Sig]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    w = World()
    manifest = w.manifest(allow_unlisted_scripts=True)
    manifest_bytes = w.sign_manifest(manifest)
    nonce = secrets.token_bytes(32)
    trust = w.trust()
    ms = fifty_measurements()
    att = seal_measurements(ms, check_manifest(trust, manifest_bytes, w.now), w.device_key, device_id="drone-001",
                            airframe="FS-Quad-1", nonce=nonce, now=w.now).envelope.to_bytes()
    device = w.device()
    devices = [device]
    policy = VerifierPolicy(allow_software_keys=True)

    def full() -> None:
        r = verify_attestation(att, trust=trust, devices=devices, manifest_bytes=manifest_bytes, nonce=nonce,
                               now=w.now, policy=policy)
        assert r.passed, r.reasons

    def stdlib_floor() -> None:
        env = json.loads(att)
        payload = base64.b64decode(env["payload"])
        assert device.key.verify(base64.b64decode(env["signatures"][0]["sig"]),
                                 dsse.pae(env["payloadType"], payload))
        json.loads(payload)

    envelope_decoder = msgspec.json.Decoder(_Envelope)

    def compiled_floor() -> None:
        env = envelope_decoder.decode(att)
        assert device.key.verify(env.signatures[0].sig, dsse.pae(env.payloadType, env.payload))
        msgspec.json.decode(env.payload)

    parsed = parse_statement(dsse.Envelope.from_bytes(att, "attestation")).measurements

    def appraisal() -> None:
        assert appraise(parsed, manifest).passed

    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key()
    msg = b"x" * 1024
    sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))

    def raw() -> None:
        pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))

    rows = [("raw ECDSA P-256 verify (baseline)", rate(raw, args.seconds)),
            ("full verification, 50 measurements", rate(full, args.seconds)),
            ("stdlib floor: decode + signature, no checks", rate(stdlib_floor, args.seconds)),
            ("compiled floor: msgspec decode + signature", rate(compiled_floor, args.seconds)),
            ("appraisal of 50 parsed measurements", rate(appraisal, args.seconds))]
    raw_rate = rows[0][1]
    print(f"{'what':<46} {'per second':>11} {'µs each':>9} {'ratio':>7}")
    for name, r in rows:
        print(f"{name:<46} {r:>11.0f} {1e6 / r:>9.1f} {r / raw_rate:>7.2f}")
    bound_us = 1e6 / rows[3][1] + 1e6 / rows[4][1]
    best = 1e6 / bound_us / raw_rate
    print(f"{'bound: compiled floor + appraisal':<46} {1e6 / bound_us:>11.0f} {bound_us:>9.1f} {best:>7.2f}")
    ratio = rows[1][1] / raw_rate
    print(f"\nratio full / raw = {ratio:.2f} (target >= {TARGET}): {'OK' if ratio >= TARGET else 'BELOW TARGET'}")
    print(f"best ratio reachable with the fastest decoder measured (bound above): {best:.2f}"
          f"{'' if best >= TARGET else ' — the target is out of reach without a format change (ADR 0008)'}")


if __name__ == "__main__":
    main()
