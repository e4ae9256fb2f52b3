"""Secrets sealed to the TPM (hardware/sealed.py, ADR 0016) on swtpm, checked with tpm2-tools too,
and the signing and gate key files the CLI writes with --seal-to."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli.main import main
from agent.cli.measure import load_signing_key
from agent.gate.key import FC_KEY_NAME, load_gate_key
from hardware.sealed import SealError, is_sealed, seal, unseal
from sim.launchers.swtpm import Swtpm

SECRET = bytes(range(1, 33))


def test_a_sealed_secret_comes_back_only_from_its_tpm(swtpm: Swtpm) -> None:
    blob = seal(swtpm.key_uri(0x81010100), SECRET)
    assert is_sealed(blob) and SECRET not in blob and SECRET.hex().encode() not in blob
    assert unseal(blob, "test key") == SECRET
    with Swtpm() as other:
        doc = json.loads(blob)
        doc["tpm"] = other.key_uri(0x81010100)
        with pytest.raises(SealError, match="test key was sealed to another TPM"):
            unseal(json.dumps(doc).encode(), "test key")


@pytest.mark.parametrize("raw", [b'{"format": "flightseal-tpm-sealed-v1"}',
                                 b'{"format": "flightseal-tpm-sealed-v1", "tpm": "x", "public": "!", "private": ""}'])
def test_a_damaged_sealed_file_is_named(raw: bytes) -> None:
    with pytest.raises(SealError, match=r"k\.json is not a readable sealed secret"):
        unseal(raw, "k.json")


@pytest.mark.skipif(shutil.which("tpm2_unseal") is None, reason="tpm2-tools not installed")
def test_tpm2_tools_unseal_the_same_file_independently(swtpm: Swtpm, tmp_path: Path) -> None:
    import base64

    doc = json.loads(seal(swtpm.key_uri(0x81010100), SECRET))
    (tmp_path / "pub").write_bytes(base64.b64decode(doc["public"]))
    (tmp_path / "priv").write_bytes(base64.b64decode(doc["private"]))
    tcti = ["-T", swtpm.tcti]

    def tool(*args: str) -> None:
        done = subprocess.run([*args, *tcti], cwd=tmp_path, check=False, capture_output=True, timeout=30)
        assert done.returncode == 0, (args, done.stderr.decode(errors="replace")[-1500:])

    # swtpm has no resource manager: each tool leaves its objects loaded, so flush between them
    for step in (("tpm2_createprimary", "-C", "o", "-G", "ecc256:aes128cfb", "-c", "primary.ctx"),
                 ("tpm2_load", "-C", "primary.ctx", "-u", "pub", "-r", "priv", "-c", "sealed.ctx"),
                 ("tpm2_unseal", "-c", "sealed.ctx", "-o", "secret")):
        tool(*step)
        tool("tpm2_flushcontext", "-t")
    assert (tmp_path / "secret").read_bytes() == SECRET


@pytest.fixture
def fc() -> Iterator[object]:
    from sim.vfc.config import VfcConfig
    from sim.vfc.lua_host import LuaScriptingAuthority
    from sim.vfc.server import VirtualFC

    with VirtualFC(VfcConfig(channels=3, scripting=False), authority=LuaScriptingAuthority()) as v:
        yield v


def test_gate_install_and_signing_setup_seal_their_key_files_to_the_tpm(swtpm: Swtpm, fc: object,
                                                                        tmp_path: Path) -> None:
    from sim.vfc.server import VirtualFC

    assert isinstance(fc, VirtualFC)
    tpm = swtpm.key_uri(0x81010100)
    gate_key = tmp_path / "gate.key"
    r = CliRunner().invoke(main, ["gate", "install", "--mavlink", fc.url(1), "--gate-key", str(gate_key),
                                  "--seal-to", tpm])
    assert r.exit_code == 0, r.output
    assert "sealed to the TPM" in r.output and gate_key.stat().st_mode & 0o777 == 0o600
    assert is_sealed(gate_key.read_bytes())
    assert load_gate_key(gate_key) == (fc.root / FC_KEY_NAME).read_bytes(), "the FC holds what the TPM unseals"

    r = CliRunner().invoke(main, ["signing", "setup", "--mavlink", fc.url(1), "--out", str(tmp_path / "s"),
                                  "--probe", fc.url(2), "--seal-to", tpm])
    assert r.exit_code == 0, r.output
    key_file = tmp_path / "s" / "signing.key"
    assert is_sealed(key_file.read_bytes()) and "delete" in r.output
    key = load_signing_key(key_file)
    assert key is not None and fc.signing_key == key
    r = CliRunner().invoke(main, ["measure", "--mavlink", fc.url(1), "--signing-key", str(key_file), "--json"])
    assert '"signed":true' in r.output.replace(" ", ""), r.output[-2000:]  # the link the unsealed key signs
