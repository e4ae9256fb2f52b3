"""``flightseal vet``: a buyer's procurement check of one airframe's attestation against their signed policy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from agent.cli.options import CheckFailed
from agent.cli.policy import read_policy
from agent.cli.verify import parse_nonce
from attest.bom import Bill
from attest.limits import LIMITS
from attest.policy import evaluate
from hardware.files import read_bounded
from report.evidence import Vetting, vet_evidence

DEFAULT_VET_MAX_AGE = 30 * 86400  # handed-over evidence: days old, not the live check's five minutes


def evidence_options(f: Any) -> Any:
    """The options `vet` and `report` share: the evidence, the trust directory and how fresh it must be."""
    for option in reversed((
        click.option("--attestation", "attestation", type=click.Path(path_type=Path, dir_okay=False), required=True,
                     help="The attestation handed over (a signed DSSE envelope)."),
        click.option("--trust", "trust_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
                     help="Trust directory: the manufacturer's pinned root, manifest.json, devices/*.json."),
        click.option("--manifest", "manifest_path", type=click.Path(path_type=Path, dir_okay=False),
                     help="Manifest the attestation names (default: TRUST/manifest.json)."),
        click.option("--nonce", "nonce_hex", help="Your challenge nonce (hex), if the attestation answers one; "
                     "without it only the age limit bounds freshness."),
        click.option("--max-age", type=click.IntRange(1, 10 * 365 * 86400), default=DEFAULT_VET_MAX_AGE,
                     show_default=True, help="Oldest attestation accepted, in seconds."),
        click.option("--allow-software-keys", is_flag=True, help="Accept development software device keys."),
    )):
        f = option(f)
    return f


def policy_options(f: Any) -> Any:
    f = click.option("--policy-key", "policy_keys", multiple=True,
                     help="Your pinned policy public key (.pub or URI; default TRUST/policy-keys/*.pub).")(f)
    return f


def gather(attestation: Path, trust_dir: Path, manifest_path: Path | None, nonce_hex: str | None, max_age: int,
           allow_software_keys: bool) -> Vetting:
    nonce = parse_nonce(nonce_hex) if nonce_hex else None
    envelope = read_bounded(attestation, "attestation", LIMITS.max_envelope_bytes)
    return vet_evidence(trust_dir, envelope, nonce=nonce, max_age=timedelta(seconds=max_age),
                        allow_software_keys=allow_software_keys, manifest_path=manifest_path)


def echo_verification(v: Vetting, max_age: int) -> Bill | None:
    bill = v.bill
    if bill is None or not bill.nonce_checked:
        limit = f"{max_age // 86400} days" if max_age % 86400 == 0 else f"{max_age} s"
        click.echo(f"procurement check on handed-over evidence: no nonce checked, so freshness rests on the age "
                   f"limit ({limit}); nothing is written to the trust directory")
    if v.result.passed and bill is not None:
        click.echo(f"verification: PASS device {bill.device_id} ({bill.airframe}, {bill.key_kind} key), manifest "
                   f"v{bill.manifest_version}, attested {bill.time:%Y-%m-%dT%H:%M:%SZ}")
    else:
        for r in v.result.reasons:
            click.echo(f"verification: FAIL {r}")
    return bill


@click.command("vet")
@evidence_options
@click.option("--policy", "policy_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Your signed procurement policy (`flightseal policy create/sign`).")
@policy_options
def vet(attestation: Path, trust_dir: Path, manifest_path: Path | None, nonce_hex: str | None, max_age: int,
        allow_software_keys: bool, policy_path: Path, policy_keys: tuple[str, ...]) -> None:
    """Vet a candidate airframe before purchase: verify its attestation, then apply your policy.

    Exit 0: verified and no findings; 1: findings (or the verification failed); 2: unusable input
    (a policy not signed by your key, a file that is not what it claims)."""
    policy, signers = read_policy(policy_path, policy_keys, trust_dir)
    v = gather(attestation, trust_dir, manifest_path, nonce_hex, max_age, allow_software_keys)
    bill = echo_verification(v, max_age)
    if bill is None:
        raise CheckFailed("the attestation matches no enrolled device: nothing to vet")
    findings = evaluate(policy, bill)
    by = ", ".join(k[:16] + "…" for k in sorted(signers))
    click.echo(f"policy {policy.name!r} v{policy.version} (signed by {by}): {len(bill.entries)} components, "
               f"{len(findings)} finding(s)")
    for f in findings:
        click.echo(f"FINDING {f}")
    if findings:
        raise CheckFailed("")
    click.echo("PASS the airframe meets the policy")


def register(group: click.Group) -> None:
    group.add_command(vet)
