"""The gate key: the secret the agent and the Lua gate share to authenticate verdicts (ADR 0015).

32 random bytes, made once per companion by ``flightseal gate install``, kept in a 0600 file there
and written beside the FC's scripts directory (``APM/flightseal_gate.key`` on a board's SD card,
``flightseal_gate.key`` in SITL's directory), where the gate reads it when it loads. Never
overwritten: a second install reuses it, so an airframe's gate and agent always agree. It may be
sealed to the companion's TPM (``gate install --seal-to``, ADR 0016).
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from agent.keyfiles import key_file_bytes, read_key_file, write_exclusive
from attest.errors import FlightSealError

GATE_KEY_LEN = 32
FC_KEY_NAME = "flightseal_gate.key"
GATE_VM_I_COUNT = 100000  # SCR_VM_I_COUNT the gate needs (its MIN_VM_I_COUNT): a MAC costs ~11000 VM instructions


class GateKeyError(FlightSealError):
    """The gate key file is missing, unreadable or malformed."""


def load_gate_key(path: Path) -> bytes:
    """The key in ``path``; refuses a file others may read (it lets anyone with it forge a pass)."""
    if not path.exists():
        raise GateKeyError(f"no gate key at {path}: run `flightseal gate install --gate-key {path}` "
                           "(it makes the key and puts it on the FC)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise GateKeyError(f"gate key {path} is readable by others (mode {mode:o}): anyone with it can forge a "
                           f"pass; chmod 600 {path}")
    key, _sealed = read_key_file(path, "gate key")
    if len(key) != GATE_KEY_LEN:
        raise GateKeyError(f"gate key {path} has {len(key)} bytes, not {GATE_KEY_LEN}: not a gate key; move it "
                           "away and run `flightseal gate install` again")
    return key


def ensure_gate_key(path: Path, seal_to: str | None = None) -> tuple[bytes, bool]:
    """The key in ``path``, made (0600, exclusively; sealed to the TPM at ``seal_to`` if given) if
    there is none; True when it was made now."""
    if path.exists():
        return load_gate_key(path), False
    key = secrets.token_bytes(GATE_KEY_LEN)
    write_exclusive(path, key_file_bytes(key, key, seal_to))
    return key, True


def fc_key_path(scripts_dir: str) -> str:
    """Where the gate looks for the key, for a given scripts directory (the gate tries both places)."""
    parent = scripts_dir.rstrip("/").rpartition("/")[0]
    return f"{parent}/{FC_KEY_NAME}" if parent else FC_KEY_NAME
