"""MAVLink2 signing between the FC, the agent and the operators' ground stations.

ArduPilot checks signatures on every channel but SERIAL0/USB once it holds a key (SETUP_SIGNING,
refused while armed), and then drops unsigned and wrongly signed packets silently. Without it,
anyone with a telemetry link can set the parameters that switch the gate's protections off
(ADR 0013). FlightSeal makes the key, sends it, keeps it on the companion, and proves on the FC
that it is enforced: the FC signs what it sends, and an unsigned probe gets no answer.

The key is SHA-256 of a random passphrase, as MAVProxy's and Mission Planner's signing set-up
derive it, so ground stations load the passphrase.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from agent.keyfiles import KeyFileError, key_file_bytes, write_exclusive
from agent.mavlink.link import Link, LinkConfig, LinkError, heartbeat_armed
from attest.errors import FlightSealError

KEY_FILE = "signing.key"  # 64 hex digits: what `--signing-key` and agent.toml's signing_key_file read
PASSPHRASE_FILE = "signing.passphrase"  # what ground stations load
SIGNING_EPOCH = 1420070400  # 2015-01-01: MAVLink signing timestamps count 10 µs from here
PROBE_PARAMS = ("MAV_SYSID", "SYSID_THISMAV")  # 4.7 renamed it; either answers


class SigningError(FlightSealError):
    """Signing could not be set up, or it is not enforced."""


@dataclass(frozen=True)
class SigningSecret:
    passphrase: str

    @property
    def key(self) -> bytes:
        return passphrase_key(self.passphrase)

    @classmethod
    def generate(cls) -> SigningSecret:
        return cls(secrets.token_urlsafe(24))


def passphrase_key(passphrase: str) -> bytes:
    """MAVProxy's ``passphrase_to_key``: SHA-256 of the ASCII passphrase."""
    return hashlib.sha256(passphrase.encode("ascii")).digest()


def signing_timestamp(now: float | None = None) -> int:
    """Now, in MAVLink signing units (10 µs since 2015-01-01)."""
    return int((max(time.time() if now is None else now, SIGNING_EPOCH) - SIGNING_EPOCH) * 1e5)


def save_secret(directory: Path, secret: SigningSecret, seal_to: str | None = None) -> tuple[Path, Path]:
    """Write the key and passphrase 0600, never over existing ones (a lost key locks the operator out).

    With ``seal_to`` (a ``tpm:`` URI) the key file holds the key sealed to that TPM (ADR 0016); the
    passphrase file is for the operators' ground stations, to be moved off the companion."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / KEY_FILE, directory / PASSPHRASE_FILE)
    for path in paths:
        if path.exists():
            raise SigningError(f"{path} exists: signing is already set up there (use `flightseal signing rotate`, "
                               "or another --out)")
    key = key_file_bytes(secret.key, (secret.key.hex() + "\n").encode(), seal_to)  # seals before writing anything
    for path, data in zip(paths, (key, (secret.passphrase + "\n").encode()), strict=True):
        try:
            write_exclusive(path, data)
        except KeyFileError as exc:
            raise SigningError(f"{exc}: signing is already set up there (use `flightseal signing rotate`, "
                               "or another --out)") from None
    return paths


def send_key(link: Link, key: bytes) -> None:
    """SETUP_SIGNING to the FC (all zeros: signing off). It has no answer; ``confirm_*`` checks it."""
    if heartbeat_armed(link.fc_heartbeat):
        raise SigningError("the vehicle is armed: ArduPilot does not take a signing key while armed; disarm first")
    msg = link.mav.setup_signing_encode(link.fc[0], link.fc[1], list(key), 0 if not any(key) else signing_timestamp())
    for _ in range(2):
        link.send(msg)
        time.sleep(0.2)


def answers_unsigned(url: str, timeout: float = 3.0) -> bool:
    """True when the FC answers a parameter read sent without a signature on ``url``."""
    try:
        link = Link.open(LinkConfig(url, heartbeat_timeout=timeout))
    except LinkError:
        return False  # signed heartbeats are still heard unsigned; no heartbeat at all: nothing answers
    with link:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in PROBE_PARAMS:
                link.send(link.mav.param_request_read_encode(link.fc[0], link.fc[1], name.encode(), -1))
            msg = link.recv(["PARAM_VALUE"], 0.5, lambda m: str(m.param_id).rstrip("\x00") in PROBE_PARAMS)
            if msg is not None:
                return True
    return False


def fc_signs(url: str, key: bytes, timeout: float = 5.0) -> bool:
    """True when the FC's packets on ``url`` carry valid signatures with ``key`` (unsigned ones are refused)."""
    try:
        with Link.open(LinkConfig(url, heartbeat_timeout=timeout, signing_key=key)) as link:
            return link.fc_heartbeat is not None and bool(getattr(link.fc_heartbeat, "_signed", False))
    except LinkError:
        return False
