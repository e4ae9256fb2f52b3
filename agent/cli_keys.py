"""``flightseal keys``: create signing keys, show them, enroll a device key."""

from __future__ import annotations

from pathlib import Path

import click

from agent.files import read_bounded, write_atomic
from attest import dsse, jsonio
from attest.enrollment import DeviceRecord
from attest.errors import KeyLoadError
from attest.keys import PublicKey
from hardware.software import SoftwareSigner, write_private_key
from hardware.uri import load_signer


def load_public(ref: str) -> PublicKey:
    """A public key from a key URI (``file:``, ``tpm:``, ``pkcs11:``) or a ``.pub`` PEM file."""
    if ":" in ref and not Path(ref).exists():
        return load_signer(ref).public_key
    data = read_bounded(Path(ref), "public key", 16 * 1024)
    try:
        return PublicKey(data.decode())
    except (UnicodeDecodeError, KeyLoadError) as exc:
        raise KeyLoadError(f"{ref}: not an ECDSA P-256 public key PEM ({exc})") from None


@click.group("keys")
def keys() -> None:
    """Create and enroll signing keys."""


@keys.command("create")
@click.option("--backend", type=click.Choice(["file"]), default="file", show_default=True,
              help="Where the private key lives.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="file backend: private key path (PEM, 0600); NAME.pub gets the public key.")
def create(backend: str, out: Path) -> None:
    """Create a new ECDSA P-256 key and print its key id and URI."""
    signer = SoftwareSigner.generate()
    write_private_key(out, signer)
    write_atomic(out.with_suffix(".pub"), signer.public_key.public_pem.encode())
    click.echo(f"created software key {signer.public_key.keyid}")
    click.echo(f"  uri: file:{out}")
    click.echo(f"  public key: {out.with_suffix('.pub')}")
    click.echo("  note: software keys are for development and offline manufacturer keys only")


@keys.command("show")
@click.argument("key")
def show(key: str) -> None:
    """Print the key id and public key of KEY (a key URI or a .pub file)."""
    pub = load_public(key)
    click.echo(f"keyid: {pub.keyid}")
    click.echo(pub.public_pem.rstrip())


@keys.command("enroll")
@click.option("--key", "key", required=True, help="The device's attestation key (URI or .pub file).")
@click.option("--kind", type=click.Choice(["software", "tpm", "pkcs11"]), default=None,
              help="Where the device key lives (default: the backend of a key URI).")
@click.option("--device-id", required=True, help="Device identity, e.g. the FC UID or airframe serial.")
@click.option("--airframe", required=True, help="Airframe model the device belongs to (as in the manifest).")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Enrollment record to write.")
def enroll(key: str, kind: str | None, device_id: str, airframe: str, out: Path) -> None:
    """Write an unsigned device enrollment; sign it with `flightseal sign` and enrollment keys."""
    from attest.keys import KeyKind

    if kind is None:
        if ":" in key and not Path(key).exists():
            kind = load_signer(key).kind.value
        else:
            raise click.UsageError("--kind is needed when --key is a public key file")
    record = DeviceRecord(device_id, airframe, load_public(key), KeyKind(kind))
    env = dsse.Envelope(dsse.DEVICE_PAYLOAD_TYPE, jsonio.dumps(record.to_json()), ())
    write_atomic(out, env.to_bytes())
    click.echo(f"wrote enrollment for {device_id} ({kind} key {record.key.keyid[:16]}…) to {out}; now sign it")


def register(group: click.Group) -> None:
    group.add_command(keys)
