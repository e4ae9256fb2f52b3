"""PKCS#11 device keys on a real SoftHSM2 token: creation, attributes, signing, attestation, and each fault."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pkcs11
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from agent.attestation import check_manifest, seal_measurements
from agent.cli.main import main
from attest import dsse
from attest.enrollment import DeviceRecord
from attest.errors import KeyLoadError
from attest.keys import KeyKind
from attest.models import Code
from attest.verify import verify_attestation
from hardware.pkcs11_backend import P256_OID, Pkcs11Error, Pkcs11Signer, Pkcs11Uri, create_key
from hardware.quote_check import default_quote_checker
from hardware.uri import load_signer
from tests.conftest import Pkcs11Token
from tests.factory import World, measurements

NONCE = bytes.fromhex("c3" * 32)


def test_key_is_generated_on_the_token_sensitive_and_never_extractable(pkcs11_token: Pkcs11Token) -> None:
    create_key(pkcs11_token.uri("device-key")).close()
    token = pkcs11.lib(pkcs11_token.hsm.module).get_token(token_label=pkcs11_token.label)
    with token.open(user_pin=pkcs11_token.pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="device-key")
        assert key[Attribute.TOKEN] and key[Attribute.SENSITIVE] and key[Attribute.ALWAYS_SENSITIVE]
        assert not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]


def test_token_key_signs_verifiably_and_reopens_by_its_printed_uri(pkcs11_token: Pkcs11Token) -> None:
    with create_key(pkcs11_token.uri("device-key")) as signer:
        assert signer.kind is KeyKind.PKCS11
        sig = signer.sign(b"DSSEv1 payload")
        assert signer.public_key.verify(sig, b"DSSEv1 payload")
        printed = str(signer.uri)
    assert ";id=%" in printed and "module-path=" in printed
    with Pkcs11Signer.open(printed) as again, Pkcs11Signer.open(pkcs11_token.uri("device-key")) as by_label:
        assert again.public_key == signer.public_key == by_label.public_key


def test_wrong_pin_is_one_clear_error_and_no_fallback(pkcs11_token: Pkcs11Token,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    create_key(pkcs11_token.uri("device-key")).close()
    monkeypatch.setenv("FLIGHTSEAL_PKCS11_PIN", "not-the-pin")
    with pytest.raises(Pkcs11Error, match=f"wrong PIN for PKCS#11 token '{pkcs11_token.label}'"):
        load_signer(pkcs11_token.uri("device-key"))


def test_missing_pin_says_where_to_put_it(pkcs11_token: Pkcs11Token, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_PKCS11_PIN")
    with pytest.raises(Pkcs11Error, match=r"FLIGHTSEAL_PKCS11_PIN.*never on the command line"):
        load_signer(pkcs11_token.uri("device-key"))


def test_pin_from_an_owner_only_file(pkcs11_token: Pkcs11Token, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    create_key(pkcs11_token.uri("device-key")).close()
    monkeypatch.delenv("FLIGHTSEAL_PKCS11_PIN")
    pin = tmp_path / "pin"
    pin.write_text(pkcs11_token.pin + "\n")
    pin.chmod(0o600)
    uri = pkcs11_token.hsm.key_uri(pkcs11_token.label, "device-key", pin_source=pin)
    with Pkcs11Signer.open(uri) as signer:
        assert signer.public_key.verify(signer.sign(b"x"), b"x")
    pin.chmod(0o644)
    with pytest.raises(Pkcs11Error, match="readable by others; chmod 600"):
        Pkcs11Signer.open(uri)


def test_pin_in_the_uri_is_refused(pkcs11_token: Pkcs11Token) -> None:
    with pytest.raises(Pkcs11Error, match="pin-value"):
        load_signer(pkcs11_token.uri("device-key") + f"&pin-value={pkcs11_token.pin}")


def test_missing_key_is_one_clear_error(pkcs11_token: Pkcs11Token) -> None:
    with pytest.raises(Pkcs11Error, match=r"no EC private key 'nope'.*flightseal keys create --backend pkcs11"):
        load_signer(pkcs11_token.uri("nope"))


def test_missing_token_lists_the_tokens_there_are(pkcs11_token: Pkcs11Token) -> None:
    with pytest.raises(Pkcs11Error, match=f"no PKCS#11 token matches.*'{pkcs11_token.label}'"):
        load_signer(pkcs11_token.hsm.key_uri("no-such-token", "device-key"))


@pytest.mark.parametrize("uri,message", [
    ("pkcs11:token=t;object=k?module-path=/nonexistent/libp11.so", "cannot load PKCS#11 module"),
    ("pkcs11:token=t", "names no key"),
    ("pkcs11:token=t;object=k;type=public?module-path=/x.so", "type must be private"),
    ("pkcs11:token=t;object=k;colour=red", "unsupported path attribute 'colour'"),
    ("pkcs11:token=t;object=k?module-name=softhsm2", "unsupported query attribute 'module-name'"),
    ("pkcs11:token=t;token=u;object=k", "appears twice"),
])
def test_malformed_or_unusable_pkcs11_uris_are_refused(uri: str, message: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHTSEAL_PKCS11_PIN", "1234")
    with pytest.raises(KeyLoadError, match=message):
        load_signer(uri)


def test_module_path_is_required_somewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_PKCS11_MODULE", raising=False)
    with pytest.raises(Pkcs11Error, match="FLIGHTSEAL_PKCS11_MODULE"):
        load_signer("pkcs11:token=t;object=k")


def test_uri_percent_encoding_round_trips() -> None:
    uri = "pkcs11:token=Flight%20Seal;object=dev%3Bkey;id=%01%ff?module-path=/usr/lib/softhsm/libsofthsm2.so"
    parsed = Pkcs11Uri.parse(uri)
    assert parsed.token == {"token": "Flight Seal"} and parsed.object == "dev;key" and parsed.id == b"\x01\xff"
    assert Pkcs11Uri.parse(str(parsed)) == parsed


def test_a_second_key_with_the_same_label_is_refused(pkcs11_token: Pkcs11Token) -> None:
    create_key(pkcs11_token.uri("device-key")).close()
    with pytest.raises(Pkcs11Error, match="already holds a key labelled 'device-key'"):
        create_key(pkcs11_token.uri("device-key"))


def test_key_imported_from_outside_the_token_is_refused(pkcs11_token: Pkcs11Token) -> None:
    """A key that ever existed outside the token is not a hardware key, whatever its flags say now."""
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    point = b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    token = pkcs11.lib(pkcs11_token.hsm.module).get_token(token_label=pkcs11_token.label)
    params = encode_named_curve_parameters(P256_OID)
    with token.open(rw=True, user_pin=pkcs11_token.pin) as session:
        session.create_object({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC,
                               Attribute.EC_PARAMS: params, Attribute.VALUE: private.private_numbers()
                               .private_value.to_bytes(32, "big"), Attribute.LABEL: "imported",
                               Attribute.ID: b"imp", Attribute.TOKEN: True, Attribute.SIGN: True,
                               Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True})
        session.create_object({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC,
                               Attribute.EC_PARAMS: params, Attribute.EC_POINT: bytes([0x04, 65]) + point,
                               Attribute.LABEL: "imported", Attribute.ID: b"imp", Attribute.TOKEN: True})
    with pytest.raises(Pkcs11Error, match="imported or has been exportable"):
        load_signer(pkcs11_token.uri("imported"))


def test_pkcs11_signed_attestation_verifies_offline(pkcs11_token: Pkcs11Token) -> None:
    world = World()
    manifest = world.manifest_bytes()
    ms = measurements()
    with create_key(pkcs11_token.uri("device-key")) as signer:
        sealed = seal_measurements(ms, check_manifest(world.trust(), manifest, world.now), signer,
                                   device_id="drone-001", airframe="FS-Quad-1", nonce=NONCE, now=world.now)
        record = DeviceRecord("drone-001", "FS-Quad-1", signer.public_key, KeyKind.PKCS11)
    assert sealed.predicate.key_kind is KeyKind.PKCS11 and sealed.predicate.quote is None
    result = verify_attestation(sealed.envelope.to_bytes(), trust=world.trust(), devices=[record],
                                manifest_bytes=manifest, nonce=NONCE, now=world.now,
                                quote_checker=default_quote_checker())
    assert result.passed, result.reasons
    wrong = verify_attestation(sealed.envelope.to_bytes(), trust=world.trust(), devices=[record],
                               manifest_bytes=manifest, nonce=bytes(32), now=world.now)
    assert {r.code for r in wrong.reasons} == {Code.NONCE_MISMATCH}


def test_cli_creates_a_token_key_and_enrolls_it(pkcs11_token: Pkcs11Token, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["keys", "create", "--backend", "pkcs11", "--module", pkcs11_token.hsm.module,
                             "--token", pkcs11_token.label, "--label", "device-key"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    uri = next(line.split("uri: ", 1)[1] for line in r.output.splitlines() if "uri: " in line)
    assert uri.startswith(f"pkcs11:token={pkcs11_token.label};object=device-key;id=")
    r = runner.invoke(main, ["keys", "enroll", "--key", uri, "--device-id", "drone-9", "--airframe", "FS-Quad-1",
                             "-o", str(tmp_path / "dev.json")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    record = json.loads(dsse.Envelope.from_bytes((tmp_path / "dev.json").read_bytes(), "enrollment").payload)
    assert record["key_kind"] == "pkcs11" and "tpm_ak_name" not in record
    r = runner.invoke(main, ["keys", "enroll", "--key", uri, "--kind", "software", "--device-id", "d",
                             "--airframe", "a", "-o", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "contradicts the key URI" in r.output


def test_cli_wrong_pin_is_one_line_exit_2(pkcs11_token: Pkcs11Token, monkeypatch: pytest.MonkeyPatch) -> None:
    create_key(pkcs11_token.uri("device-key")).close()
    monkeypatch.setenv("FLIGHTSEAL_PKCS11_PIN", "0000")
    r = CliRunner().invoke(main, ["keys", "show", pkcs11_token.uri("device-key")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.count("\n") == 1 and "wrong PIN" in r.output


def _can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                           capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs `unshare -m` and tmpfs mounts (root or user namespaces)")
def test_token_full_is_one_clear_error(tmp_path: Path) -> None:
    """A SoftHSM2 token on a tiny tmpfs (in a private mount namespace) runs out of room for keys."""
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    script = f"""
set -u
mount -t tmpfs -o size=16k tmpfs {tokens}
softhsm2-util --init-token --free --label tiny --pin 1234 --so-pin 5678 >/dev/null
for i in 1 2 3 4 5 6 7 8 9 10; do
  {sys.executable} -c 'from agent.cli.main import main; main()' keys create --backend pkcs11 --token tiny \
    --label k$i --module /usr/lib/softhsm/libsofthsm2.so || exit 0
done
exit 3
"""
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "FLIGHTSEAL_PKCS11_PIN": "1234"}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, timeout=120, env=env,
                          cwd=Path(__file__).parent.parent, check=False)
    err = done.stderr.decode()
    assert done.returncode == 0, f"token never filled up: {err}"
    assert done.stdout.decode().count("created PKCS#11 key") >= 1
    assert err.strip().splitlines()[-1].startswith("flightseal: error: token 'tiny' is full or cannot store")
