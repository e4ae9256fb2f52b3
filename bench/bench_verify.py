"""Benchmark: full offline verification of an attestation with 50 measurements, per second,
beside raw ECDSA P-256 verifications per second measured in the same run.

Run: .venv/bin/python -m bench.bench_verify [--seconds 3]
Target: ratio (full verifications / raw ECDSA verifications) >= 0.5.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.attestation import check_manifest, seal_measurements
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
    devices = [w.device()]
    policy = VerifierPolicy(allow_software_keys=True)

    def full() -> None:
        r = verify_attestation(att, trust=trust, devices=devices, manifest_bytes=manifest_bytes, nonce=nonce,
                               now=w.now, policy=policy)
        assert r.passed, r.reasons

    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key()
    msg = b"x" * 1024
    sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))

    def raw() -> None:
        pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))

    raw_rate = rate(raw, args.seconds)
    full_rate = rate(full, args.seconds)
    ratio = full_rate / raw_rate
    print(f"{'what':<44} {'per second':>12}")
    print(f"{'raw ECDSA P-256 verify (baseline)':<44} {raw_rate:>12.0f}")
    print(f"{'full verification, 50 measurements':<44} {full_rate:>12.0f}")
    print(f"{'ratio full / raw (target >= ' + str(TARGET) + ')':<44} {ratio:>12.2f}  "
          f"{'OK' if ratio >= TARGET else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
