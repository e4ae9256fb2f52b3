"""Benchmark: sign and quote latency per key backend, median and p95 of N runs, with the software
key measured in the same run as the baseline.

Backends: software (in-process P-256), TPM 2.0 (a real swtpm over TCP: TPM2_Hash ticket + TPM2_Sign
with the restricted AK), PKCS#11 (a real SoftHSM2 token: SHA-256 in software + CKM_ECDSA). The
quote is the TPM's: PCR 23 reset and extended with one event per measurement, TPM2_Quote over 9
PCRs, then the PCRs read back and checked. swtpm and SoftHSM2 are software, so the numbers are a
lower bound for a discrete TPM (tens of milliseconds per operation on a real chip).

Run: .venv/bin/python -m bench.bench_signers [--runs 100] [--payload-bytes 4096]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from attest.signer import Signer
from hardware import pkcs11_backend, tpm
from hardware.software import SoftwareSigner
from sim.launchers.softhsm import SoftHsm
from sim.launchers.swtpm import Swtpm


def timings(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm up: first use loads keys and sessions
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--payload-bytes", type=int, default=4096, help="size of the signed DSSE PAE")
    args = parser.parse_args()
    payload = b"DSSEv1 " + os.urandom(max(0, args.payload_bytes - 7))
    qualifying = os.urandom(32)

    rows: list[tuple[str, str, list[float]]] = []
    with Swtpm() as swtpm, SoftHsm() as hsm:
        hsm.init_token("bench", pin="1234")
        os.environ["FLIGHTSEAL_PKCS11_PIN"] = "1234"
        signers: list[tuple[str, Signer]] = [("software", SoftwareSigner.generate())]
        tpm_signer = tpm.create_key(f"{swtpm.key_uri(tpm.DEFAULT_AK_HANDLE)};auth={swtpm.state_dir / 'ak.auth'}")
        p11_signer = pkcs11_backend.create_key(hsm.key_uri("bench", "device-key"))
        signers += [("tpm (swtpm)", tpm_signer), ("pkcs11 (SoftHSM2)", p11_signer)]
        try:
            for name, signer in signers:
                rows.append((name, f"sign {len(payload)} B", timings(lambda s=signer: s.sign(payload), args.runs)))
            rows.append(("tpm (swtpm)", "quote 11 PCRs (0-9, agent PCR)",
                         timings(lambda: tpm_signer.quote(qualifying), args.runs)))
        finally:
            tpm_signer.close()
            p11_signer.close()

    baseline = statistics.median(rows[0][2])
    print(f"{'backend':<20} {'operation':<28} {'median ms':>10} {'p95 ms':>10} {'x software':>11}")
    for name, op, xs in rows:
        med = statistics.median(xs)
        print(f"{name:<20} {op:<28} {med * 1e3:>10.3f} {p95(xs) * 1e3:>10.3f} {med / baseline:>11.1f}")
    print(f"({args.runs} runs each; baseline: software sign median {baseline * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
