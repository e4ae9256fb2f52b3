"""``flightseal keys``: create signing keys (file, TPM 2.0, PKCS#11), show them, enroll a device key
(a TPM key only with proof, through the commands in ``agent/cli/keys_tpm.py``).

A hardware key is created where it will live and named by its key URI (see ``hardware/uri.py``);
the command prints that URI, which is all the agent's configuration needs. PINs and hierarchy
passwords come from the environment or a file, never from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli import keys_tpm as cli_keys_tpm
from agent.cli.keys_tpm import ek_ca_option, prove_bench, prove_split
from attest import dsse, jsonio
from attest.enrollment import DeviceRecord
from attest.errors import KeyLoadError
from attest.keys import KeyKind, PublicKey
from attest.signer import Signer
from hardware.files import read_bounded, write_atomic
from hardware.software import SoftwareSigner, write_private_key
from hardware.uri import load_signer

if TYPE_CHECKING:
    from hardware.tpm_credential import Proven


def load_public(ref: str) -> PublicKey:
    """A public key from a key URI (``file:``, ``tpm:``, ``pkcs11:``) or a ``.pub`` PEM file."""
    if _is_uri(ref):
        signer = load_signer(ref)
        try:
            return signer.public_key
        finally:
            _close(signer)
    data = read_bounded(Path(ref), "public key", 16 * 1024)
    try:
        return PublicKey(data.decode())
    except (UnicodeDecodeError, KeyLoadError) as exc:
        raise KeyLoadError(f"{ref}: not an ECDSA P-256 public key PEM ({exc})") from None


def _is_uri(ref: str) -> bool:
    return ":" in ref and not Path(ref).exists()


def _close(signer: Signer) -> None:
    close = getattr(signer, "close", None)
    if callable(close):
        close()


@click.group("keys")
def keys() -> None:
    """Create and enroll signing keys."""


@keys.command("create")
@click.option("--backend", type=click.Choice(["file", "tpm", "pkcs11"]), default="file", show_default=True,
              help="Where the private key lives.")
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="file backend: private key path (PEM, 0600); NAME.pub gets the public key.")
@click.option("--tcti", help="tpm: how to reach the TPM, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321.")
@click.option("--handle", default="0x81010100", show_default=True, help="tpm: persistent handle for the key.")
@click.option("--pcrs", help="tpm: SHA-256 PCRs to quote, default 0-9 (the agent PCR, 13, is always added).")
@click.option("--module", "module", help="pkcs11: module path (default: $FLIGHTSEAL_PKCS11_MODULE).")
@click.option("--token", help="pkcs11: token label.")
@click.option("--label", help="pkcs11: label of the new key object.")
@click.option("--pin-file", type=click.Path(path_type=Path),
              help="pkcs11: file holding the user PIN (mode 0600); default: $FLIGHTSEAL_PKCS11_PIN.")
@click.option("--pub", "pub_out", type=click.Path(path_type=Path), help="tpm/pkcs11: also write the public key here.")
def create(backend: str, out: Path | None, tcti: str | None, handle: str, pcrs: str | None, module: str | None,
           token: str | None, label: str | None, pin_file: Path | None, pub_out: Path | None) -> None:
    """Create a new ECDSA P-256 key and print its key id and URI."""
    if backend == "file":
        if out is None:
            raise click.UsageError("--backend file needs --out PATH")
        if out.suffix == ".pub":
            raise click.BadParameter(f"{out} would be both the private key and its public key ({out.stem}.pub "
                                     "is written beside it): name the private key file, e.g. "
                                     f"{out.with_suffix('.pem')}", param_hint="--out")
        signer = SoftwareSigner.generate()
        write_private_key(out, signer)
        write_atomic(out.with_suffix(".pub"), signer.public_key.public_pem.encode())
        click.echo(f"created software key {signer.public_key.keyid}")
        click.echo(f"  uri: file:{out}")
        click.echo(f"  public key: {out.with_suffix('.pub')}")
        click.echo("  note: software keys are for development and offline manufacturer keys only")
        return
    if backend == "tpm":
        _create_tpm(tcti, handle, pcrs, pub_out)
    else:
        _create_pkcs11(module, token, label, pin_file, pub_out)


def _create_tpm(tcti: str | None, handle: str, pcrs: str | None, pub_out: Path | None) -> None:
    from hardware import tpm

    if not tcti:
        raise click.UsageError("--backend tpm needs --tcti (device:/dev/tpmrm0, swtpm:host=…,port=…)")
    uri = f"tpm:{tcti};handle={handle}" + (f";pcrs={pcrs}" if pcrs else "")
    with tpm.create_key(tpm.TpmUri.parse(uri)) as signer:
        _report("TPM", signer, str(signer.uri), pub_out)
        click.echo(f"  ak name: {signer.ak_name}")
        ek = signer.ek_name()
        click.echo(f"  ek name: {ek or '(no EK persisted at a TCG handle)'}")
        click.echo(f"  auth:    {signer.uri.auth_file} (the key's auth value: only the agent's user may read it; "
                   "FLIGHTSEAL_TPM_AUTH_DIR chooses the directory)")


def _create_pkcs11(module: str | None, token: str | None, label: str | None, pin_file: Path | None,
                   pub_out: Path | None) -> None:
    from hardware import pkcs11_backend as p11

    if not token or not label:
        raise click.UsageError("--backend pkcs11 needs --token LABEL and --label NAME")
    uri = p11.Pkcs11Uri({"token": token}, label, b"", module or "", str(pin_file.resolve()) if pin_file else "")
    with p11.create_key(uri) as signer:
        _report("PKCS#11", signer, str(signer.uri), pub_out)


def _report(what: str, signer: Signer, uri: str, pub_out: Path | None) -> None:
    click.echo(f"created {what} key {signer.public_key.keyid}")
    click.echo(f"  uri: {uri}")
    if pub_out is not None:
        write_atomic(pub_out, signer.public_key.public_pem.encode())
        click.echo(f"  public key: {pub_out}")


@keys.command("show")
@click.argument("key")
def show(key: str) -> None:
    """Print the key id and public key of KEY (a key URI or a .pub file)."""
    pub = load_public(key)
    click.echo(f"keyid: {pub.keyid}")
    click.echo(pub.public_pem.rstrip())


@keys.command("enroll")
@click.option("--key", "key", help="The device's attestation key (URI or .pub file).")
@click.option("--kind", type=click.Choice(["software", "tpm", "pkcs11"]), default=None,
              help="Where the device key lives (default: the backend of a key URI).")
@click.option("--identity", "identity_path", type=click.Path(path_type=Path),
              help="tpm, split flow: the device's identity file (keys tpm-identity); replaces --key.")
@click.option("--challenge", "challenge_path", type=click.Path(path_type=Path),
              help="tpm, split flow: your own copy of the challenge (keys challenge).")
@click.option("--answer", "answer_path", type=click.Path(path_type=Path),
              help="tpm, split flow: the device's answer (keys activate).")
@ek_ca_option
@click.option("--device-id", required=True, help="Device identity, e.g. the FC UID or airframe serial.")
@click.option("--airframe", required=True, help="Airframe model the device belongs to (as in the manifest).")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Enrollment record to write.")
def enroll(key: str | None, kind: str | None, identity_path: Path | None, challenge_path: Path | None,
           answer_path: Path | None, ek_cas: tuple[Path, ...], device_id: str, airframe: str, out: Path) -> None:
    """Write an unsigned device enrollment; sign it with `flightseal sign` and enrollment keys.

    A tpm key is enrolled only with proof that it is in a certified TPM (ADR 0018): credential
    activation against the TPM's EK, whose certificate must chain to a --ek-ca. On a bench that
    reaches the TPM, --key tpm:URI --ek-ca CA.pem does it all; otherwise --identity, --challenge and
    --answer (see `keys tpm-identity`, `keys challenge`, `keys activate`).
    """
    split = (identity_path, challenge_path, answer_path)
    if any(p is not None for p in split):
        if any(p is None for p in split) or key is not None or kind not in (None, "tpm"):
            raise click.UsageError("the split TPM flow takes --identity, --challenge and --answer together, and no "
                                   "--key (the key is the AK in the identity)")
        assert identity_path is not None and challenge_path is not None and answer_path is not None
        record = _tpm_record(device_id, airframe, prove_split(identity_path, challenge_path, answer_path, ek_cas))
    elif key is None:
        raise click.UsageError("--key is needed (or --identity, --challenge and --answer for a TPM key)")
    else:
        record = _record(key, kind, ek_cas, device_id, airframe)
    env = dsse.Envelope(dsse.DEVICE_PAYLOAD_TYPE, jsonio.dumps(record.to_json()), ())
    write_atomic(out, env.to_bytes())
    proof = f", proven by {record.tpm_evidence.ek_ca.subject}" if record.tpm_evidence else ""
    click.echo(f"wrote enrollment for {device_id} ({record.key_kind.value} key {record.key.keyid[:16]}…{proof}) to "
               f"{out}; now sign it")


def _record(key: str, kind: str | None, ek_cas: tuple[Path, ...], device_id: str, airframe: str) -> DeviceRecord:
    if not _is_uri(key):
        if kind is None:
            raise click.UsageError("--kind is needed when --key is a public key file")
        if kind == KeyKind.TPM.value:
            raise click.UsageError("--kind tpm needs proof that the key is in a certified TPM, which a public key file "
                                   "cannot give: enroll with --key tpm:URI --ek-ca VENDOR_CA.pem, or the split flow "
                                   "(--identity, --challenge, --answer)")
        return DeviceRecord(device_id, airframe, load_public(key), KeyKind(kind))
    signer = load_signer(key)
    try:
        public, actual = signer.public_key, signer.kind
    finally:
        _close(signer)
    if kind is not None and KeyKind(kind) is not actual:
        raise click.UsageError(f"--kind {kind} contradicts the key URI, which is a {actual.value} key")
    if actual is KeyKind.TPM:
        return _tpm_record(device_id, airframe, prove_bench(key, ek_cas))
    return DeviceRecord(device_id, airframe, public, actual)


def _tpm_record(device_id: str, airframe: str, proven: Proven) -> DeviceRecord:
    return DeviceRecord(device_id, airframe, proven.key, KeyKind.TPM, tpm_ak_name=proven.evidence.ak_name,
                        tpm_ek_name=proven.ek_name, tpm_evidence=proven.evidence)


cli_keys_tpm.register(keys)


def register(group: click.Group) -> None:
    group.add_command(keys)
