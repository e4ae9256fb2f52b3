"""``flightseal keys tpm-identity / challenge / activate``: prove a TPM key before enrolling it (ADR 0018).

Split, when the device and the manufacturer are on different machines::

    device:        flightseal keys tpm-identity --key tpm:URI -o identity.json
    manufacturer:  flightseal keys challenge --identity identity.json --ek-ca VENDOR_CA.pem -o challenge.json
    device:        flightseal keys activate --key tpm:URI --challenge challenge.json -o answer.json
    manufacturer:  flightseal keys enroll --identity identity.json --challenge challenge.json \\
                       --answer answer.json --ek-ca VENDOR_CA.pem --device-id D --airframe A -o device.json

On a bench that reaches the TPM, ``keys enroll --key tpm:URI --ek-ca VENDOR_CA.pem …`` does all of
it in one process. The manufacturer checks the answer against its own copy of the challenge.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from cryptography import x509

from attest import jsonio, timeutil
from attest.limits import LIMITS
from attest.tpm_evidence import load_cas
from hardware.files import read_bounded, write_atomic

if TYPE_CHECKING:
    from hardware.tpm_credential import Proven

MAX_FILE_BYTES = LIMITS.max_tpm_identity_file_bytes
MAX_CA_FILES = LIMITS.max_tpm_ca_files
MAX_CA_BYTES = LIMITS.max_tpm_ca_bytes

ek_ca_option = click.option(
    "--ek-ca", "ek_cas", multiple=True, type=click.Path(path_type=Path),
    help="TPM vendor CA certificates the EK certificate must chain to: a PEM file (roots and intermediates) or a "
         "folder of *.pem; repeatable.")


def read_cas(paths: Sequence[Path]) -> list[x509.Certificate]:
    if not paths:
        raise click.UsageError("a TPM key is enrolled only with proof that it is in a certified TPM: give --ek-ca "
                               "VENDOR_CA.pem (the TPM vendor's EK CA)")
    out: list[x509.Certificate] = []
    for p in paths:
        files = sorted(p.glob("*.pem"))[:MAX_CA_FILES] if p.is_dir() else [p]
        for f in files:
            out += load_cas(read_bounded(f, "TPM vendor CA", MAX_CA_BYTES), f"TPM vendor CA {f}")
    if not out:
        raise click.UsageError(f"no CA certificate in {', '.join(map(str, paths))}")
    return out


def _read(path: Path, what: str) -> object:
    return jsonio.loads(read_bounded(path, what, MAX_FILE_BYTES), f"{what} {path}", MAX_FILE_BYTES)


def _write(path: Path, doc: object) -> None:
    write_atomic(path, jsonio.pretty(doc).encode())


@click.command("tpm-identity")
@click.option("--key", "key", required=True, help="The device's TPM attestation key (tpm: URI).")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Identity file to write.")
def tpm_identity(key: str, out: Path) -> None:
    """Device: write the TPM's EK certificate, EK and AK public areas for the manufacturer."""
    from hardware.tpm_identity import read_identity

    identity = read_identity(key)
    _write(out, identity.to_json())
    click.echo(f"wrote TPM identity (AK {identity.ak_name[:16]}…, {identity.ek_template} EK) to {out}; give it to "
               "the manufacturer (`flightseal keys challenge`)")


@click.command("challenge")
@click.option("--identity", "identity_path", type=click.Path(path_type=Path), required=True,
              help="The device's identity file (keys tpm-identity).")
@ek_ca_option
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Challenge file to write.")
def challenge(identity_path: Path, ek_cas: tuple[Path, ...], out: Path) -> None:
    """Manufacturer: check the EK certificate and the AK, and make a credential only that TPM can open."""
    from hardware.tpm_credential import make_challenge
    from hardware.tpm_identity import TpmIdentity

    identity = TpmIdentity.from_json(_read(identity_path, "TPM identity"), f"TPM identity {identity_path}")
    made, _ = make_challenge(identity, read_cas(ek_cas), timeutil.now())
    _write(out, made.to_json())
    click.echo(f"wrote challenge for AK {identity.ak_name[:16]}… to {out}; keep this copy (enroll checks the answer "
               "against it) and give the device a copy (`flightseal keys activate`)")


@click.command("activate")
@click.option("--key", "key", required=True, help="The device's TPM attestation key (tpm: URI).")
@click.option("--challenge", "challenge_path", type=click.Path(path_type=Path), required=True,
              help="The manufacturer's challenge (keys challenge).")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Answer file to write.")
def activate(key: str, challenge_path: Path, out: Path) -> None:
    """Device: let the TPM open the manufacturer's credential with its EK and AK (TPM2_ActivateCredential)."""
    from hardware.tpm_identity import TpmChallenge
    from hardware.tpm_identity import activate as tpm_activate

    made = TpmChallenge.from_json(_read(challenge_path, "TPM challenge"), f"TPM challenge {challenge_path}")
    _write(out, tpm_activate(key, made).to_json())
    click.echo(f"wrote answer to {out}; give it to the manufacturer (`flightseal keys enroll --answer`)")


def prove_split(identity_path: Path, challenge_path: Path, answer_path: Path, ek_cas: Sequence[Path]) -> Proven:
    """Manufacturer: the :class:`hardware.tpm_credential.Proven` of the split flow's three files."""
    from hardware.tpm_credential import accept
    from hardware.tpm_identity import TpmAnswer, TpmChallenge, TpmIdentity

    identity = TpmIdentity.from_json(_read(identity_path, "TPM identity"), f"TPM identity {identity_path}")
    made = TpmChallenge.from_json(_read(challenge_path, "TPM challenge"), f"TPM challenge {challenge_path}")
    answer = TpmAnswer.from_json(_read(answer_path, "TPM answer"), f"TPM answer {answer_path}")
    return accept(identity, made, answer, read_cas(ek_cas), timeutil.now())


def prove_bench(key: str, ek_cas: Sequence[Path]) -> Proven:
    from hardware.tpm_credential import prove_bench as prove

    return prove(key, read_cas(ek_cas), timeutil.now())


def register(group: click.Group) -> None:
    for command in (tpm_identity, challenge, activate):
        group.add_command(command)
