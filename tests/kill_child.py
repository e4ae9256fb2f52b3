"""Child process for tests/test_kill_points.py: the agent's and the verifier's state writes, killed
with SIGKILL at the N-th file-system change.

Run as ``python -m tests.kill_child STATE_DIR KILL_AT``. Python's audit hooks see every ``open``
for writing, ``rename``/``replace``, ``chmod``, ``truncate`` and ``remove`` before it happens; the
hook kills the process (SIGKILL: no cleanup, no ``finally``) at event ``KILL_AT`` (0: never), and
otherwise prints the number of events at the end, so the parent can try every point in turn.

The writes are the real ones: ``AuditLog.append``, ``ManifestState.record`` (manifest and root
versions), ``RootStore.accept``, ``SequenceSource`` (gate.seq), ``ImageCache.put`` and
``TrustDir.record_clock``, in the order an agent's passes and a verifier's runs make them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
STEPS = 3  # versions recorded, records appended


def digest(version: int) -> str:
    return hashlib.sha256(f"manifest {version}".encode()).hexdigest()


def _hook(kill_at: int, state: Path) -> Any:
    count = 0
    where = str(state)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal count
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS)
            if not writes or not (isinstance(path, int) or where in str(path)):
                return
        elif event not in ("os.rename", "os.replace", "os.chmod", "os.truncate", "os.remove"):
            return
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    return lambda: count


def main() -> None:
    state, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    from agent.audit import AuditLog
    from agent.gate.client import SequenceSource
    from agent.measure.imagecache import CachedImage, ImageCache
    from attest.quote import ClockInfo
    from truststore.manifest_state import ManifestState
    from truststore.root_store import RootStore
    from truststore.trustdir import TrustDir

    counted = _hook(kill_at, state)
    audit = AuditLog(state / "audit.log")
    manifests = ManifestState(state / "manifest-state.json")
    roots = RootStore(state / "root.json", state)
    roots.load()
    trust = TrustDir(state)
    cache = ImageCache(state / "image-cache")
    for step in range(1, STEPS + 1):
        SequenceSource(state / "gate.seq", clock=lambda step=step: 1735689600 + 1000 * step)  # type: ignore[misc]
        manifests.record(step, digest(step))
        roots.accept()
        cache.put(f"fw{step}", CachedImage("ab" * 32, step, 1000 * step, 1.0))
        audit.append("attestation", {"step": step})
        trust.record_clock("drone-001", ClockInfo(1000 * step, 1, 0, True))
    print(f"events {counted()}")


if __name__ == "__main__":
    main()
