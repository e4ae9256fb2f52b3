"""``flightseal policy create|sign|show``: the buyer's own signed procurement policy (attest/policy.py, ADR 0023)."""

from __future__ import annotations

from pathlib import Path

import click

from attest import dsse, jsonio
from attest.errors import FormatError
from attest.keys import PublicKey
from attest.manifest import COMPONENT_CLASSES
from attest.models import Strength
from attest.policy import MAX_POLICY_BYTES, POLICY_PAYLOAD_TYPE, BuyerPolicy, PolicyError, load_policy
from hardware.files import read_bounded, write_atomic
from hardware.uri import load_signer

POLICY_KEYS_DIR = "policy-keys"  # TRUST/policy-keys/*.pub: the buyer's pinned policy keys, beside their trust root
MAX_POLICY_KEYS = 16


def read_policy(path: Path, key_refs: tuple[str, ...], trust_dir: Path | None) -> tuple[BuyerPolicy, set[str]]:
    """The policy at ``path``, verified against the pinned keys (``--policy-key``, else TRUST/policy-keys/).

    Raises:
        PolicyError: no key pinned, or the policy is unsigned, altered, by another key or malformed.
    """
    from agent.cli.keys import load_public

    refs = list(key_refs)
    if not refs and trust_dir is not None and (trust_dir / POLICY_KEYS_DIR).is_dir():
        refs = [str(p) for p in sorted((trust_dir / POLICY_KEYS_DIR).glob("*.pub"))[:MAX_POLICY_KEYS]]
    if not refs:
        raise PolicyError(f"policy {path}", f"no policy key pinned: give --policy-key KEY.pub, or put it in "
                          f"{POLICY_KEYS_DIR}/ of the trust directory")
    keys: dict[str, PublicKey] = {}
    for ref in refs:
        key = load_public(ref)
        keys[key.keyid] = key
    try:
        return load_policy(read_bounded(path, "policy", MAX_POLICY_BYTES), keys)
    except PolicyError as exc:
        raise PolicyError(f"policy {path}", exc.detail, exc.field) from None


@click.group("policy")
def policy() -> None:
    """Write and sign a buyer's procurement policy for `flightseal vet`."""


@policy.command("create")
@click.option("--name", required=True, help="What the policy is, e.g. 'Agency X critical-infrastructure drones'.")
@click.option("--version", "version", type=click.IntRange(1, 2**53), default=1, show_default=True)
@click.option("--require-class", "classes", multiple=True, type=click.Choice(COMPONENT_CLASSES),
              help="This class must be present and measured (repeatable).")
@click.option("--require-critical", is_flag=True, help="Require every critical class (all but 'other').")
@click.option("--deny-origin", "origins", multiple=True, metavar="CC", help="ISO 3166-1 alpha-2 code (repeatable).")
@click.option("--min-strength", "strengths", multiple=True, metavar="CLASS=STRENGTH",
              help="e.g. flight-controller=flash-read (repeatable).")
@click.option("--allow-vendor", "allow", multiple=True, help="Only these vendors (repeatable; none: any).")
@click.option("--deny-vendor", "deny", multiple=True, help="Never these vendors (repeatable).")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def create(name: str, version: int, classes: tuple[str, ...], require_critical: bool, origins: tuple[str, ...],
           strengths: tuple[str, ...], allow: tuple[str, ...], deny: tuple[str, ...], out: Path) -> None:
    """Write an unsigned policy; then sign it with `flightseal policy sign`."""
    if require_critical:
        classes = tuple(dict.fromkeys((*classes, *(c for c in COMPONENT_CLASSES if c != "other"))))
    min_strength = {}
    for item in strengths:
        cls_name, _, label = item.partition("=")
        if cls_name not in COMPONENT_CLASSES:
            raise click.BadParameter(f"{item!r}: unknown class {cls_name!r}", param_hint="--min-strength")
        try:
            min_strength[cls_name] = Strength.parse(label)
        except FormatError as exc:
            raise click.BadParameter(f"{item!r}: {exc.detail}", param_hint="--min-strength") from None
    value = BuyerPolicy(name, version, classes, origins, min_strength, allow, deny)
    BuyerPolicy.from_json(value.to_json())  # the same checks as a signed one (e.g. a bad country code)
    write_atomic(out, dsse.Envelope(POLICY_PAYLOAD_TYPE, jsonio.dumps(value.to_json()), ()).to_bytes())
    click.echo(f"wrote policy {name!r} v{version} to {out}; sign it with `flightseal policy sign {out} --key KEY`")


@policy.command("sign")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--key", "key", required=True, help="The buyer's key URI (file:, tpm:, pkcs11:).")
def sign(path: Path, key: str) -> None:
    """Add the buyer's signature to a policy."""
    env = dsse.Envelope.from_bytes(read_bounded(path, "policy", MAX_POLICY_BYTES), f"policy {path}", MAX_POLICY_BYTES)
    if env.payload_type != POLICY_PAYLOAD_TYPE:
        raise FormatError(f"policy {path}", f"payload type {env.payload_type!r} is not a buyer policy")
    BuyerPolicy.from_json(env.payload_json(f"policy {path}", MAX_POLICY_BYTES))
    signer = load_signer(key)
    signed = dsse.add_signature(env, signer)
    write_atomic(path, signed.to_bytes())
    click.echo(f"signed policy {path} with {signer.public_key.keyid[:16]}… ({len(signed.signatures)} signature(s)); "
               "vetters pin the public key with --policy-key")


@policy.command("show")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--policy-key", "key_refs", multiple=True, help="The buyer's public key (.pub or URI).")
def show(path: Path, key_refs: tuple[str, ...]) -> None:
    """Check the policy's signature against the pinned key and print it."""
    value, signers = read_policy(path, key_refs, None)
    click.echo(jsonio.pretty(value.to_json()).rstrip())
    click.echo(f"signed by: {', '.join(k[:16] + '…' for k in sorted(signers))}")


def register(group: click.Group) -> None:
    group.add_command(policy)
