"""Shared fixtures. Hardware fixtures start real simulators: swtpm and SoftHSM2 (see sim/).

- ``swtpm`` (session): a running swtpm with EKs and EK certificates from its own local CA
  (``swtpm.ek_ca_certs``, ADR 0018); ``tpm_uri`` (per test): the URI of a fresh attestation key in
  it, evicted afterwards.
- ``softhsm`` (session): a SoftHSM2 token store in a temp dir, active in this process;
  ``pkcs11_token`` (per test): a new token with its own label and PIN, the PIN in
  ``$FLIGHTSEAL_PKCS11_PIN``.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sim.launchers.softhsm import SoftHsm
from sim.launchers.swtpm import Swtpm

_handles = itertools.count(0x81010100)
_tokens = itertools.count(1)


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install.sh installs it)")


@pytest.fixture(scope="session")
def swtpm() -> Iterator[Swtpm]:
    _need("swtpm", "swtpm_setup", "swtpm_localca")
    with Swtpm(ek_cert=True) as tpm:
        yield tpm


@pytest.fixture
def tpm_uri(swtpm: Swtpm) -> Iterator[str]:
    """URI of a new TPM attestation key at a handle no other test uses."""
    from hardware.tpm import create_key

    handle = next(_handles)
    signer = create_key(swtpm.key_uri(handle))
    uri = str(signer.uri)  # names the key's auth file
    signer.close()
    yield uri
    swtpm.evict(handle)


@pytest.fixture(scope="session")
def softhsm() -> Iterator[SoftHsm]:
    _need("softhsm2-util")
    with SoftHsm() as hsm:
        yield hsm


@dataclass(frozen=True)
class Pkcs11Token:
    label: str
    pin: str
    hsm: SoftHsm

    def uri(self, key_label: str) -> str:
        return self.hsm.key_uri(self.label, key_label)


@pytest.fixture
def pkcs11_token(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> Pkcs11Token:
    n = next(_tokens)
    token = Pkcs11Token(softhsm.init_token(f"fs-test-{n}", pin=f"pin-{n}"), f"pin-{n}", softhsm)
    monkeypatch.setenv("FLIGHTSEAL_PKCS11_PIN", token.pin)
    return token


@pytest.fixture(scope="session", autouse=True)
def _tpm_auth_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """AK auth files (`create_key`) go to /var/lib/flightseal by default: never in tests. Session-wide,
    so module- and session-scoped fixtures that make keys are covered too (each test narrows it below)."""
    path = tmp_path_factory.mktemp("tpm-auth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTSEAL_TPM_AUTH_DIR", str(path))
        yield path


@pytest.fixture(autouse=True)
def _gate_key_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`flightseal gate install` keeps the gate key in /var/lib/flightseal by default: never in tests."""
    path = tmp_path / "gate-key" / "gate.key"
    monkeypatch.setenv("FLIGHTSEAL_GATE_KEY", str(path))
    monkeypatch.setenv("FLIGHTSEAL_TPM_AUTH_DIR", str(tmp_path / "tpm-auth"))  # AK auth files, likewise
    return path
