"""``flightseal root`` and ``flightseal sign``: the trust root and threshold signing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from agent.cli.keys import load_public
from attest import dsse, jsonio, timeutil
from attest.errors import FormatError
from attest.limits import LIMITS
from attest.root import Role, Root
from hardware.files import read_bounded, write_atomic
from hardware.uri import load_signer


@click.group("root")
def root() -> None:
    """Create the trust root that operators pin."""


@root.command("create")
@click.option("--root-key", "root_keys", multiple=True, required=True, help="Key allowed to sign roots.")
@click.option("--root-threshold", type=click.IntRange(1), default=1, show_default=True)
@click.option("--manifest-key", "manifest_keys", multiple=True, required=True, help="Key allowed to sign manifests.")
@click.option("--manifest-threshold", type=click.IntRange(1), default=1, show_default=True)
@click.option("--enrollment-key", "enrollment_keys", multiple=True, required=True,
              help="Key allowed to sign device enrollments.")
@click.option("--enrollment-threshold", type=click.IntRange(1), default=1, show_default=True)
@click.option("--version", "version", type=click.IntRange(1, 2**53), default=1, show_default=True)
@click.option("--expires-days", type=click.IntRange(1, 3650), default=365, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True)
def create(root_keys: tuple[str, ...], root_threshold: int, manifest_keys: tuple[str, ...], manifest_threshold: int,
           enrollment_keys: tuple[str, ...], enrollment_threshold: int, version: int, expires_days: int,
           out: Path) -> None:
    """Write an unsigned root; then sign it with a threshold of its root keys."""
    keys = {}
    roles = {}
    for name, refs, threshold in (("root", root_keys, root_threshold), ("manifest", manifest_keys, manifest_threshold),
                                  ("enrollment", enrollment_keys, enrollment_threshold)):
        ids = []
        for ref in refs:
            pub = load_public(ref)
            keys[pub.keyid] = pub
            ids.append(pub.keyid)
        if threshold > len(set(ids)):
            raise click.UsageError(f"--{name}-threshold {threshold} is more than the {len(set(ids))} keys given")
        roles[name] = Role(tuple(dict.fromkeys(ids)), threshold)
    value = Root(version, timeutil.now() + timedelta(days=expires_days), keys, roles)
    env = dsse.Envelope(dsse.ROOT_PAYLOAD_TYPE, jsonio.dumps(value.to_json()), ())
    write_atomic(out, env.to_bytes())
    click.echo(f"wrote root v{version} to {out}: root {root_threshold}-of-{len(root_keys)}, manifest "
               f"{manifest_threshold}-of-{len(manifest_keys)}, enrollment {enrollment_threshold}-of-"
               f"{len(enrollment_keys)}; now sign it with `flightseal sign`")


_TYPES = {
    dsse.ROOT_PAYLOAD_TYPE: "root",
    dsse.MANIFEST_PAYLOAD_TYPE: "manifest",
    dsse.DEVICE_PAYLOAD_TYPE: "device enrollment",
}


@click.command("sign")
@click.argument("document", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--key", "key", required=True, help="Key URI of the signer (file:, tpm:, pkcs11:).")
def sign(document: Path, key: str) -> None:
    """Add one signature to a root, manifest or enrollment (one offline key at a time)."""
    env = dsse.Envelope.from_bytes(read_bounded(document, "document", LIMITS.max_manifest_bytes), str(document))
    what = _TYPES.get(env.payload_type)
    if what is None:
        raise FormatError(str(document), f"payload type {env.payload_type!r} is not a root, manifest or enrollment")
    signer = load_signer(key)
    signed = dsse.add_signature(env, signer)
    write_atomic(document, signed.to_bytes())
    click.echo(f"signed {what} {document} with {signer.public_key.keyid[:16]}… ({len(signed.signatures)} "
               "signature(s))")


def register(group: click.Group) -> None:
    group.add_command(root)
    group.add_command(sign)
