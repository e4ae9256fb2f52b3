"""A tpm enrolment proves the TPM (ADR 0018): EK certificate to a vendor CA, credential activation, evidence
in the record, and every way around it refused. Real swtpms with swtpm's local CA in a temp dir; no mocks."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from agent.attestation import check_manifest, seal_measurements
from agent.cli.main import main
from attest import dsse, timeutil
from attest.enrollment import DeviceRecord
from attest.errors import FormatError
from attest.keys import KeyKind
from attest.tpm_evidence import TpmProofError, load_cas, load_ek_certificate, tpm_name, vouching_ca
from hardware.software import SoftwareSigner, write_private_key
from hardware.tpm import TpmError, TpmSigner, TpmUri, create_key
from hardware.tpm_credential import accept, make_challenge, prove_bench
from hardware.tpm_identity import TpmAnswer, TpmChallenge, activate, digest, read_identity
from hardware.uri import quoter_for
from sim.launchers.swtpm import Swtpm
from tests.factory import World, measurements

NONCE = bytes.fromhex("5a" * 32)
AK = 0x81010100


def cas_of(tpm: Swtpm) -> list:  # type: ignore[type-arg]
    return [c for f in tpm.ek_ca_certs for c in load_cas(f.read_bytes(), str(f))]


def ca_args(tpm: Swtpm) -> list[str]:
    return [a for f in tpm.ek_ca_certs for a in ("--ek-ca", str(f))]


@dataclass(frozen=True)
class Tpm:
    sim: Swtpm
    uri: str  # its AK's key URI (naming the AK's auth file, where the AK has one)


def _with_ak(sim: Swtpm) -> Tpm:
    signer = create_key(sim.key_uri(AK))
    signer.close()
    return Tpm(sim, str(signer.uri))


@pytest.fixture(scope="module")
def twin(swtpm: Swtpm) -> Iterator[Tpm]:
    """A second TPM certified by the same CA as ``swtpm``, with an AK of its own at 0x81010100."""
    with Swtpm(ek_cert=True, ca_dir=swtpm.ca_dir) as tpm:
        yield _with_ak(tpm)


@pytest.fixture(scope="module")
def foreign(swtpm: Swtpm) -> Iterator[Tpm]:
    """A TPM whose EK certificate comes from another local CA, with the same CA names as ``swtpm``'s."""
    with Swtpm(ek_cert=True) as tpm:
        yield _with_ak(tpm)


def run(*args: str, code: int = 0) -> str:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == code, r.output
    return r.output


def signed(world: World, unsigned: Path) -> bytes:
    """The CLI's unsigned record, signed by 2 of the world's 3 enrollment keys (as `flightseal sign` twice)."""
    env = dsse.Envelope.from_bytes(unsigned.read_bytes(), "enrollment")
    return world.enrollment_bytes(DeviceRecord.from_json(json.loads(env.payload)))


def trust_dir(tmp_path: Path, world: World, enrollment: bytes, tpm_cas: list[Path] | None = None) -> Path:
    trust = tmp_path / "trust"
    (trust / "devices").mkdir(parents=True)
    (trust / "root.json").write_bytes(world.root_bytes())
    (trust / "manifest.json").write_bytes(world.manifest_bytes())
    (trust / "devices" / "drone-001.json").write_bytes(enrollment)
    if tpm_cas is not None:
        (trust / "tpm-cas").mkdir()
        for f in tpm_cas:
            shutil.copyfile(f, trust / "tpm-cas" / f.name)
    return trust


def attest_and_verify(tmp_path: Path, world: World, uri: str, trust: Path, code: int, *extra: str) -> str:
    """Seal a quoted attestation with the TPM key and run `flightseal verify` on it."""
    ms = measurements()
    with TpmSigner.open(uri) as signer:
        sealed = seal_measurements(ms, check_manifest(world.trust(), world.manifest_bytes(), world.now), signer,
                                   device_id="drone-001", airframe="FS-Quad-1", nonce=NONCE, now=world.now,
                                   quoter=quoter_for(signer, ms))
    (tmp_path / "att.json").write_bytes(sealed.envelope.to_bytes())
    return run("verify", str(tmp_path / "att.json"), "--trust", str(trust), "--nonce", NONCE.hex(), *extra, code=code)


def test_bench_enrolment_proves_the_tpm_and_its_attestation_verifies(swtpm: Swtpm, tpm_uri: str,
                                                                     tmp_path: Path) -> None:
    out = run("keys", "enroll", "--key", tpm_uri, *ca_args(swtpm), "--device-id", "drone-001", "--airframe",
              "FS-Quad-1", "-o", str(tmp_path / "dev.json"))
    assert "proven by CN=swtpm-localca-rootca" in out
    record = DeviceRecord.from_json(json.loads(dsse.Envelope.from_bytes((tmp_path / "dev.json").read_bytes(),
                                                                        "enrollment").payload))
    ev = record.tpm_evidence
    assert ev is not None and ev.method == "credential-activation"
    with TpmSigner.open(tpm_uri) as signer:
        assert record.key == signer.public_key and ev.ak_name == signer.ak_name == record.tpm_ak_name
    assert tpm_name(ev.ak_public) == ev.ak_name
    assert ev.ek_certificate == read_identity(tpm_uri).ek_certificate
    world = World(now=timeutil.now())
    trust = trust_dir(tmp_path, world, signed(world, tmp_path / "dev.json"), list(swtpm.ek_ca_certs))
    out = attest_and_verify(tmp_path, world, tpm_uri, trust, 0)
    assert out.startswith("PASS device drone-001 (FS-Quad-1, tpm key)")


def test_split_flow_through_files_enrols_and_no_file_but_the_answer_holds_the_secret(
        swtpm: Swtpm, tpm_uri: str, tmp_path: Path) -> None:
    identity, challenge, answer, dev = (tmp_path / n for n in ("identity.json", "challenge.json", "answer.json",
                                                                 "dev.json"))
    run("keys", "tpm-identity", "--key", tpm_uri, "-o", str(identity))  # device
    run("keys", "challenge", "--identity", str(identity), *ca_args(swtpm), "-o", str(challenge))  # manufacturer
    device_copy = tmp_path / "device-copy.json"
    shutil.copyfile(challenge, device_copy)
    run("keys", "activate", "--key", tpm_uri, "--challenge", str(device_copy), "-o", str(answer))  # device
    run("keys", "enroll", "--identity", str(identity), "--challenge", str(challenge), "--answer", str(answer),
        *ca_args(swtpm), "--device-id", "drone-001", "--airframe", "FS-Quad-1", "-o", str(dev))  # manufacturer
    secret = json.loads(answer.read_text())["secret"]
    assert secret not in challenge.read_text() and secret not in identity.read_text()
    assert secret not in dev.read_text() and base64.b64encode(bytes.fromhex(secret)).decode() not in dev.read_text()
    record = DeviceRecord.from_json(json.loads(dsse.Envelope.from_bytes(dev.read_bytes(), "enrollment").payload))
    with TpmSigner.open(tpm_uri) as signer:
        assert record.key_kind is KeyKind.TPM and record.key == signer.public_key
    assert record.tpm_evidence is not None and record.tpm_ek_name == json.loads(challenge.read_text())["ek_name"]
    world = World(now=timeutil.now())
    attest_and_verify(tmp_path, world, tpm_uri, trust_dir(tmp_path, world, signed(world, dev)), 0)


def test_ek_certificate_from_an_untrusted_ca_is_refused(swtpm: Swtpm, foreign: Tpm, tmp_path: Path) -> None:
    """The foreign CA has the very names of the trusted one (both are swtpm-localca): only signatures tell."""
    out = run("keys", "enroll", "--key", foreign.uri, *ca_args(swtpm), "--device-id", "drone-001",
              "--airframe", "FS-Quad-1", "-o", str(tmp_path / "dev.json"), code=1)
    assert "is not issued by any configured TPM vendor CA" in out
    assert not (tmp_path / "dev.json").exists()
    run("keys", "tpm-identity", "--key", foreign.uri, "-o", str(tmp_path / "id.json"))
    out = run("keys", "challenge", "--identity", str(tmp_path / "id.json"), *ca_args(swtpm), "-o",
              str(tmp_path / "ch.json"), code=1)
    assert "not issued by any configured TPM vendor CA" in out and not (tmp_path / "ch.json").exists()


def test_intermediate_alone_vouches_but_the_root_alone_does_not_reach_the_ek(swtpm: Swtpm, tpm_uri: str) -> None:
    root, intermediate = swtpm.ek_ca_certs
    ek = load_ek_certificate(read_identity(tpm_uri).ek_certificate)
    now = timeutil.now()
    assert vouching_ca(ek, load_cas(intermediate.read_bytes(), "i"), now).subject.rfc4514_string() == "CN=swtpm-localca"
    assert vouching_ca(ek, cas_of(swtpm), now).subject.rfc4514_string() == "CN=swtpm-localca-rootca"
    with pytest.raises(TpmProofError, match="not issued by any configured"):
        vouching_ca(ek, load_cas(root.read_bytes(), "r"), now)
    with pytest.raises(TpmProofError, match="valid from"):
        vouching_ca(ek, cas_of(swtpm), now.replace(year=2000))


def test_answer_from_another_tpm_or_a_made_up_one_is_refused(swtpm: Swtpm, twin: Tpm, tpm_uri: str,
                                                            tmp_path: Path) -> None:
    identity, challenge = tmp_path / "identity.json", tmp_path / "challenge.json"
    run("keys", "tpm-identity", "--key", tpm_uri, "-o", str(identity))
    run("keys", "challenge", "--identity", str(identity), *ca_args(swtpm), "-o", str(challenge))
    out = run("keys", "activate", "--key", twin.uri, "--challenge", str(challenge), "-o",
              str(tmp_path / "answer.json"), code=2)
    assert "no endorsement key named" in out and "another TPM" in out
    made_up = TpmAnswer(digest(TpmChallenge.from_json(json.loads(challenge.read_text()))), secrets.token_bytes(32))
    (tmp_path / "answer.json").write_text(json.dumps(made_up.to_json()))
    out = run("keys", "enroll", "--identity", str(identity), "--challenge", str(challenge), "--answer",
              str(tmp_path / "answer.json"), *ca_args(swtpm), "--device-id", "d", "--airframe", "FS-Quad-1", "-o",
              str(tmp_path / "dev.json"), code=1)
    assert "the answer's secret is not the challenge's" in out and not (tmp_path / "dev.json").exists()


def test_an_ak_that_is_not_in_the_tpm_of_the_certified_ek_is_refused(swtpm: Swtpm, twin: Tpm,
                                                                      tpm_uri: str) -> None:
    """The identity pairs the AK of TPM A with the certified EK of TPM B (same vendor CA): MakeCredential
    succeeds, but no TPM opens it: B's TPM refuses (its AK is not the one named), A has no such EK."""
    now = timeutil.now()
    a, b = read_identity(tpm_uri), read_identity(twin.uri)
    mixed = replace(b, ak_public=a.ak_public, ak_name=a.ak_name)
    challenge, _ = make_challenge(mixed, cas_of(swtpm), now)
    with pytest.raises(TpmError, match="the TPM refused to activate the credential"):
        activate(twin.uri, challenge)  # B's EK found, B's own AK loaded: the TPM checks the name
    with pytest.raises(TpmError, match="no endorsement key named"):
        activate(tpm_uri, challenge)
    honest = activate(twin.uri, make_challenge(b, cas_of(swtpm), now)[0])
    with pytest.raises(TpmProofError, match="another challenge"):
        accept(mixed, challenge, honest, cas_of(swtpm), now)  # an answer B did give, to another challenge


def test_a_tpm_record_without_evidence_is_refused_by_verify_with_its_reason(swtpm: Swtpm, foreign: Tpm,
                                                                             tpm_uri: str, tmp_path: Path) -> None:
    world = World(now=timeutil.now())
    with TpmSigner.open(tpm_uri) as signer:
        bare = DeviceRecord("drone-001", "FS-Quad-1", signer.public_key, KeyKind.TPM, tpm_ak_name=signer.ak_name)
    trust = trust_dir(tmp_path, world, world.enrollment_bytes(bare))
    out = attest_and_verify(tmp_path, world, tpm_uri, trust, 1)
    assert out.splitlines() == [x for x in out.splitlines() if x.startswith("FAIL device-tpm-unproven [device]")]
    out = attest_and_verify(tmp_path, world, tpm_uri, trust, 1, "--json")
    assert [r["code"] for r in json.loads(out)["reasons"]] == ["device-tpm-unproven"]

    proven = prove_bench(tpm_uri, cas_of(swtpm), timeutil.now())
    other = prove_bench(foreign.uri, cas_of(foreign.sim), timeutil.now())
    cases = {  # evidence of another TPM's AK; a verifier whose tpm-cas/ trusts only the foreign CA
        "foreign AK": (replace(bare, tpm_evidence=other.evidence), None, "not the enrolled key"),
        "untrusted": (replace(bare, tpm_evidence=proven.evidence), list(foreign.sim.ek_ca_certs),
                      "this verifier's tpm-cas/"),
    }
    for name, (record, cas, why) in cases.items():
        shutil.rmtree(tmp_path / "trust")
        trust = trust_dir(tmp_path, world, world.enrollment_bytes(record), cas)
        out = attest_and_verify(tmp_path, world, tpm_uri, trust, 1)
        assert "FAIL device-tpm-unproven [device]" in out and why in out, (name, out)
    shutil.rmtree(tmp_path / "trust")
    trust = trust_dir(tmp_path, world, world.enrollment_bytes(replace(bare, tpm_evidence=proven.evidence)),
                      list(swtpm.ek_ca_certs))
    assert attest_and_verify(tmp_path, world, tpm_uri, trust, 0).startswith("PASS")


def test_a_software_key_can_never_be_labelled_tpm(swtpm: Swtpm, tpm_uri: str, tmp_path: Path) -> None:
    soft = SoftwareSigner.generate()
    write_private_key(tmp_path / "dev.pem", soft)
    (tmp_path / "dev.pub").write_text(soft.public_key.public_pem)
    common = ["--device-id", "drone-001", "--airframe", "FS-Quad-1", "-o", str(tmp_path / "dev.json")]
    out = run("keys", "enroll", "--key", str(tmp_path / "dev.pub"), "--kind", "tpm", *ca_args(swtpm), *common, code=2)
    assert "--kind tpm needs proof" in out
    out = run("keys", "enroll", "--key", f"file:{tmp_path / 'dev.pem'}", "--kind", "tpm", *common, code=2)
    assert "contradicts the key URI" in out
    out = run("keys", "enroll", "--key", tpm_uri, *common, code=2)  # a real TPM key, but no proof asked for
    assert "--ek-ca" in out
    assert not (tmp_path / "dev.json").exists()
    evidence = prove_bench(tpm_uri, cas_of(swtpm), timeutil.now()).evidence
    with pytest.raises(FormatError, match="cannot carry TPM evidence"):
        DeviceRecord("drone-001", "FS-Quad-1", soft.public_key, KeyKind.SOFTWARE, tpm_evidence=evidence)


@pytest.mark.skipif(shutil.which("tpm2_makecredential") is None or shutil.which("openssl") is None,
                    reason="tpm2-tools or openssl not installed")
def test_tpm2_tools_and_openssl_agree(swtpm: Swtpm, tpm_uri: str, tmp_path: Path) -> None:
    """Independently: openssl verifies the EK chain; tpm2_makecredential's credential opens with our
    activation; tpm2_activatecredential opens our MakeCredential's."""
    from tpm2_pytss import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT
    from tpm2_pytss.utils import credential_to_tools, tools_to_credential

    root, intermediate = swtpm.ek_ca_certs
    identity = read_identity(tpm_uri)
    ek = load_ek_certificate(identity.ek_certificate)
    (tmp_path / "ek.pem").write_bytes(ek.public_bytes(serialization.Encoding.PEM))
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(intermediate),
                         str(tmp_path / "ek.pem")], capture_output=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    alone = subprocess.run(["openssl", "verify", "-CAfile", str(root), str(tmp_path / "ek.pem")],
                           capture_output=True, timeout=30, check=False)
    assert alone.returncode != 0  # the root alone does not reach the EK certificate, as ours says

    (tmp_path / "ekpub.pem").write_bytes(ek.public_key().public_bytes(serialization.Encoding.PEM,
                                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    secret = secrets.token_bytes(32)
    (tmp_path / "secret").write_bytes(secret)
    made = subprocess.run(["tpm2_makecredential", "-T", "none", "-u", str(tmp_path / "ekpub.pem"), "-G", "rsa",
                           "-s", str(tmp_path / "secret"), "-n", identity.ak_name, "-o", str(tmp_path / "cred")],
                          capture_output=True, timeout=30, check=False)
    assert made.returncode == 0, made.stderr
    blob, encrypted = tools_to_credential((tmp_path / "cred").read_bytes())
    ours, _ = make_challenge(identity, cas_of(swtpm), timeutil.now())
    theirs = replace(ours, credential_blob=blob.marshal(), encrypted_secret=encrypted.marshal())
    assert activate(tpm_uri, theirs).secret == secret

    blob2, _ = TPM2B_ID_OBJECT.unmarshal(ours.credential_blob)
    enc2, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(ours.encrypted_secret)
    (tmp_path / "ours.cred").write_bytes(credential_to_tools(blob2, enc2))
    env = {"TPM2TOOLS_TCTI": swtpm.tcti, "PATH": "/usr/bin:/bin"}
    uri = TpmUri.parse(tpm_uri)
    auth = f"-p file:{uri.auth_file}" if getattr(uri, "auth_file", "") else ""  # the AK's auth value (ADR 0020)
    script = (f"set -e; cd {tmp_path}; tpm2_startauthsession --policy-session -S s.ctx; "
              "tpm2_policysecret -S s.ctx -c e >/dev/null; "
              f"tpm2_activatecredential -c 0x{uri.handle:08x} {auth} -C 0x81010001 -i ours.cred -o out.bin "
              "-P session:s.ctx; "
              "tpm2_flushcontext s.ctx")
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256((tmp_path / "out.bin").read_bytes()).hexdigest() == ours.secret_sha256
