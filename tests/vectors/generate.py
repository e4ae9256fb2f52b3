"""Make the known-answer files once: `python -m tests.vectors.generate`.

The files are checked in and must keep verifying forever (tests/test_known_answer.py); the
private keys are thrown away, so nobody can quietly re-make them. Re-running this writes new
files and is only right when the format changes on purpose (then say so in the commit).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.attestation import check_manifest, seal_measurements
from tests.factory import World, measurements

HERE = Path(__file__).parent
MADE_AT = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
NONCE = bytes.fromhex("6b6e6f776e2d616e737765722d6e6f6e63652d666c696768747365616c2d3031")


def main() -> None:
    w = World(now=MADE_AT)
    manifest = replace(w.manifest(), expires=MADE_AT + timedelta(days=3650))
    manifest_bytes = w.sign_manifest(manifest)
    root = replace(w.root(), expires=MADE_AT + timedelta(days=3650))
    sealed = seal_measurements(measurements(), check_manifest(w.trust(), manifest_bytes, MADE_AT), w.device_key,
                               device_id="drone-001", airframe="FS-Quad-1", nonce=NONCE, now=MADE_AT)
    (HERE / "root.json").write_bytes(w.sign_root(root, w.m_keys[:2]))
    (HERE / "manifest.json").write_bytes(manifest_bytes)
    (HERE / "device.json").write_bytes(w.enrollment_bytes(w.device()))
    (HERE / "attestation.json").write_bytes(sealed.envelope.to_bytes())
    (HERE / "nonce.hex").write_text(NONCE.hex() + "\n")


if __name__ == "__main__":
    main()
