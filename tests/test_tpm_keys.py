"""TPM 2.0 device keys in a real swtpm: creation, signing, quoting, and each fault as one clear error."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from tpm2_pytss import ESYS_TR, TPM2_ALG, TPMA_OBJECT, TPML_DIGEST_VALUES, TPMT_HA, TPMT_SIG_SCHEME, TPMU_HA
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from agent.cli.main import main
from attest import dsse
from attest.errors import KeyLoadError
from attest.keys import KeyKind
from attest.models import Kind, Measurement, Strength
from attest.quote import AGENT_PCR, check_quote, parse_attest
from hardware.tpm import EK_HANDLES, TpmError, TpmSigner, TpmUri, connect, create_key, read_auth
from hardware.uri import load_signer
from sim.launchers.swtpm import Swtpm


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tpm_key_signs_short_and_long_data_verifiably(tpm_uri: str) -> None:
    with TpmSigner.open(tpm_uri) as signer:
        assert signer.kind is KeyKind.TPM
        for data in (b"DSSEv1 short", b"DSSEv1 " + bytes(range(256)) * 40):  # the long one uses a hash sequence
            sig = signer.sign(data)
            assert signer.public_key.verify(sig, data)
            assert not signer.public_key.verify(sig, data + b"x")


def test_key_uri_loads_the_same_tpm_key_and_never_a_software_one(tpm_uri: str) -> None:
    signer = load_signer(tpm_uri)
    assert isinstance(signer, TpmSigner)
    with TpmSigner.open(tpm_uri) as again:
        assert again.public_key == signer.public_key
    signer.close()


def test_tpm_key_is_restricted_fixed_and_born_in_the_tpm(tpm_uri: str) -> None:
    uri = TpmUri.parse(tpm_uri)
    esapi = connect(uri)
    try:
        public, _, _ = esapi.read_public(esapi.tr_from_tpmpublic(uri.handle))
    finally:
        esapi.close()
    attrs = public.publicArea.objectAttributes
    for flag in (TPMA_OBJECT.RESTRICTED, TPMA_OBJECT.SIGN_ENCRYPT, TPMA_OBJECT.FIXEDTPM, TPMA_OBJECT.FIXEDPARENT,
                 TPMA_OBJECT.SENSITIVEDATAORIGIN):
        assert attrs & flag == flag


def test_the_tpm_itself_refuses_to_sign_a_forged_quote_with_the_key(tpm_uri: str) -> None:
    """The reason one restricted key may sign both: no ticket for data that starts like a TPM structure."""
    uri = TpmUri.parse(tpm_uri)
    forged = b"\xffTCG\x80\x18 pretend quote"
    with TpmSigner.open(uri) as signer, pytest.raises(TpmError, match="TPM_GENERATED_VALUE"):
        signer.sign(forged)
    esapi = connect(uri)
    try:
        key = esapi.tr_from_tpmpublic(uri.handle)
        esapi.tr_set_auth(key, read_auth(uri))
        digest, ticket = esapi.hash(forged, TPM2_ALG.SHA256, ESYS_TR.ENDORSEMENT)
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        with pytest.raises(TSS2_Exception, match="ticket"):
            esapi.sign(key, digest, scheme, ticket)
    finally:
        esapi.close()


def test_quote_is_a_fresh_tpm_quote_with_real_counters(tpm_uri: str) -> None:
    qualifying = hashlib.sha256(b"statement").digest()
    with TpmSigner.open(tpm_uri) as signer:
        quote = signer.quote(qualifying)
        attest = parse_attest(bytes.fromhex(quote["attest"]))
        assert attest.extra_data == qualifying
        assert attest.clock.safe
        assert attest.clock.reset_count < 1000, "counters of an endorsement-hierarchy key are not obfuscated"
        assert quote["agent_pcr"] == AGENT_PCR and quote["agent_log"] == []
        assert sorted(int(i) for i in quote["pcrs"]) == [*range(10), AGENT_PCR]
        assert signer.public_key.verify(bytes.fromhex(quote["signature"]), bytes.fromhex(quote["attest"]))


def test_the_agent_pcr_keeps_every_start_up_and_quotes_replay_it(tmp_path: Path) -> None:
    """ADR 0020: start-ups go into PCR 13, which the OS cannot reset; the log survives agent restarts
    (and a crash between logging and extending); a foreign extension makes quotes fail, named."""
    from agent.pcr_log import record_start
    from sim.launchers.swtpm import Swtpm

    agent = hashlib.sha256(b"agent files").digest()
    with Swtpm() as tpm:
        signer = create_key(tpm.key_uri(0x81010100))
        try:
            record_start(tmp_path / "agent-pcr.json", signer, agent)
            restarted = TpmSigner.open(signer.uri)
            record_start(tmp_path / "agent-pcr.json", restarted, agent)  # the agent restarted, same boot
            quote = restarted.quote(bytes(32))
            assert [e["kind"] for e in quote["agent_log"]] == ["agent-start", "agent-start"]
            assert check_quote(quote, key=signer.public_key, qualifying=bytes(32), measurements=[
                Measurement("companion.agent", Kind.COMPANION, {"sha256": agent.hex()}, "companion:installed-files",
                            Strength.SELF_REPORTED)]) == []
            other = connect(TpmUri.parse(str(signer.uri)))  # another local process
            try:
                with pytest.raises(TSS2_Exception, match="locality"):
                    other.pcr_reset(ESYS_TR.parse(f"PCR{AGENT_PCR}"))  # PCR 13 cannot be reset from the OS
                other.pcr_extend(ESYS_TR.parse(f"PCR{AGENT_PCR}"), TPML_DIGEST_VALUES([TPMT_HA(
                    hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=hashlib.sha256(b"someone else").digest()))]))
            finally:
                other.close()
            with pytest.raises(TpmError, match=f"PCR {AGENT_PCR} does not replay from the agent's log"):
                restarted.quote(bytes(32))
            restarted.close()
        finally:
            signer.close()


def test_another_local_process_cannot_quote_or_sign_with_the_key(tpm_uri: str, tmp_path: Path) -> None:
    """tpm2-tools as the other process: without the key's auth value the TPM refuses; with it (the agent's
    file) the same command works, so the refusal is the auth value's doing."""
    uri = TpmUri.parse(tpm_uri)
    tcti = f"swtpm:{uri.tcti_conf}"
    base = ["tpm2_quote", "-T", tcti, "-c", f"0x{uri.handle:08x}", "-l", "sha256:0,13", "-q", "00" * 32,
            "-m", str(tmp_path / "msg"), "-s", str(tmp_path / "sig"), "-g", "sha256"]
    foreign = subprocess.run(base, capture_output=True, text=True, timeout=30, check=False)
    assert foreign.returncode != 0 and "auth" in (foreign.stderr + foreign.stdout).lower(), foreign.stderr
    guess = subprocess.run([*base, "-p", "hex:" + "00" * 32], capture_output=True, text=True, timeout=30, check=False)
    assert guess.returncode != 0
    agent = subprocess.run([*base, "-p", "hex:" + read_auth(uri).hex()], capture_output=True, text=True, timeout=30,
                           check=False)
    assert agent.returncode == 0, agent.stderr


def test_unreachable_tpm_names_the_tcti_and_the_fix() -> None:
    port = closed_port()
    with pytest.raises(TpmError) as err:
        load_signer(f"tpm:swtpm:host=127.0.0.1,port={port};handle=0x81010100")
    assert f"swtpm:host=127.0.0.1,port={port}" in str(err.value)
    assert "start swtpm" in str(err.value)


def test_missing_tpm_device_names_the_device_and_the_fix(tmp_path: Path) -> None:
    dev = tmp_path / "tpmrm9"
    with pytest.raises(TpmError) as err:
        TpmSigner.open(f"tpm:device:{dev};handle=0x81010100")
    assert f"device:{dev}" in str(err.value) and "group tss" in str(err.value)


def test_missing_key_handle_is_one_clear_error(swtpm: Swtpm) -> None:
    with pytest.raises(TpmError, match=r"no key at TPM handle 0x8101ffff.*flightseal keys create"):
        TpmSigner.open(swtpm.key_uri(0x8101FFFF))


def test_handle_holding_the_endorsement_key_is_not_used_to_sign(swtpm: Swtpm) -> None:
    with pytest.raises(TpmError, match="not a FlightSeal attestation key"):
        TpmSigner.open(swtpm.key_uri(0x81010001))


@pytest.mark.parametrize("handle", EK_HANDLES)
def test_creating_a_key_on_an_ek_handle_is_refused(swtpm: Swtpm, handle: int) -> None:
    with pytest.raises(TpmError, match="reserved for the endorsement key"):
        create_key(swtpm.key_uri(handle))


def test_creating_a_key_on_an_occupied_handle_keeps_the_old_key(tpm_uri: str) -> None:
    with TpmSigner.open(tpm_uri) as before:
        old = before.public_key
    with pytest.raises(TpmError, match="already holds a key"):
        create_key(tpm_uri)
    with TpmSigner.open(tpm_uri) as after:
        assert after.public_key == old


@pytest.mark.parametrize("uri,message", [
    ("tpm:swtpm:host=127.0.0.1,port=2321", "names no key"),
    ("tpm:serial:/dev/ttyS0;handle=0x81010100", "TCTI 'serial'"),
    ("tpm:device;handle=0x81010100", "needs its configuration"),
    ("tpm:device:/dev/tpmrm0;handle=0x01010100", "not a persistent handle"),
    ("tpm:device:/dev/tpmrm0;handle=beef", "not a number"),
    ("tpm:device:/dev/tpmrm0;handle=0x81010100;colour=blue", "unknown parameter"),
    ("tpm:device:/dev/tpmrm0;handle=0x81010100;pcrs=0,24", "PCR numbers go from 0 to 23"),
])
def test_malformed_tpm_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(KeyLoadError, match=message):
        load_signer(uri)


@pytest.mark.parametrize("uri", ["tpm:swtpm:host=127.0.0.1,port=2321;handle=0x81010100",
                                 "tpm:device:/dev/tpmrm0;handle=0x81010100;pcrs=0,7,23",
                                 "tpm:tabrmd;handle=0x81000002"])
def test_tpm_uri_round_trips(uri: str) -> None:
    assert str(TpmUri.parse(uri)) == uri


def test_quote_over_a_pcr_bank_the_tpm_has_not_allocated_is_one_clear_error() -> None:
    with (Swtpm(pcr_banks="sha1", create_ek=False) as sha1_only,
          create_key(sha1_only.key_uri(0x81010100)) as signer,
          pytest.raises(TpmError, match=r"sha256:.*not allocated.*tpm2_pcrallocate")):
        signer.quote(bytes(32))


def test_a_quote_for_one_nonce_does_not_pass_for_another(tpm_uri: str) -> None:
    with TpmSigner.open(tpm_uri) as signer:
        quote = signer.quote(hashlib.sha256(b"nonce A").digest())
        reasons = check_quote(quote, key=signer.public_key, qualifying=hashlib.sha256(b"nonce B").digest(),
                              measurements=[])
    assert [r.code.value for r in reasons] == ["quote-qualifying-data"]


def test_cli_creates_a_tpm_key_prints_its_uri_and_enrolls_ak_and_ek_names(swtpm: Swtpm, tmp_path: Path) -> None:
    runner = CliRunner()
    handle = 0x81010200
    r = runner.invoke(main, ["keys", "create", "--backend", "tpm", "--tcti", swtpm.tcti, "--handle", hex(handle),
                             "--pub", str(tmp_path / "ak.pub")], catch_exceptions=False)
    try:
        assert r.exit_code == 0, r.output
        uri = next(line.split("uri: ", 1)[1] for line in r.output.splitlines() if "uri: " in line)
        assert uri.startswith(swtpm.key_uri(handle) + ";auth=")  # the AK's auth value file (ADR 0020)
        cas = [arg for f in swtpm.ek_ca_certs for arg in ("--ek-ca", str(f))]
        r = runner.invoke(main, ["keys", "enroll", "--key", uri, *cas, "--device-id", "drone-7", "--airframe",
                                 "FS-Quad-1", "-o", str(tmp_path / "dev.json")], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        record = json.loads(dsse.Envelope.from_bytes((tmp_path / "dev.json").read_bytes(), "enrollment").payload)
        assert record["key_kind"] == "tpm"
        assert record["tpm_ak_name"].startswith("000b") and len(record["tpm_ak_name"]) == 68
        assert record["tpm_ek_name"].startswith("000b")
        assert record["tpm_evidence"]["ak_name"] == record["tpm_ak_name"]
        assert record["key"]["public"] == (tmp_path / "ak.pub").read_text()
        again = runner.invoke(main, ["keys", "create", "--backend", "tpm", "--tcti", swtpm.tcti, "--handle",
                                     hex(handle)])
        assert again.exit_code == 2 and "already holds a key" in again.output
    finally:
        swtpm.evict(handle)


def test_cli_unreachable_tpm_is_one_line_exit_2() -> None:
    r = CliRunner().invoke(main, ["keys", "show", f"tpm:swtpm:host=127.0.0.1,port={closed_port()};handle=0x81010100"])
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert r.output.count("\n") == 1 and "cannot reach the TPM through TCTI swtpm:" in r.output


def test_a_tpm_that_comes_back_with_another_key_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After a TPM comes back the signer opens it again, but only to use the key it was opened with:
    another key at the handle (another TPM, a re-provisioned one) is an error naming both."""
    import shutil

    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (scripts/install.sh installs it)")
    from hardware.tpm import TpmError, create_key
    from sim.launchers.swtpm import Swtpm

    with Swtpm() as tpm:
        signer = create_key(tpm.key_uri(0x81010100))
        try:
            signer.sign(b"before")
            tpm.pause()
            with pytest.raises(TpmError):
                signer.sign(b"while gone")
            tpm.resume()
            assert signer.sign(b"back")  # the same TPM, the same key: reopened by itself
            from hardware.tpm import TpmUri, connect

            esapi = connect(TpmUri.parse(tpm.key_uri(0x81010100)))
            try:  # a new endorsement seed: what a different TPM would hold (persistent AKs go with it)
                esapi.change_eps(ESYS_TR.PLATFORM)
            finally:
                esapi.close()
            create_key(tpm.key_uri(0x81010100) + f";auth={tmp_path / 'other.auth'}").close()  # another key there
            signer._broken = True  # as after any failed call
            with pytest.raises(TpmError, match="came back with another key"):
                signer.sign(b"other key")
        finally:
            signer.close()
