"""``flightseal report``: an airframe's bill of materials as CycloneDX 1.6 JSON and as an HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.options import CheckFailed
from agent.cli.policy import read_policy
from agent.cli.vet import echo_verification, evidence_options, gather, policy_options
from attest.policy import BuyerPolicy, Finding, evaluate
from hardware.files import write_atomic


@click.command("report")
@evidence_options
@click.option("--policy", "policy_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also apply your signed policy and list its findings.")
@policy_options
@click.option("--cyclonedx", "cdx_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write CycloneDX 1.6 JSON here (e.g. airframe.cdx.json).")
@click.option("--html", "html_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report a person reads here (self-contained, printable).")
def report(attestation: Path, trust_dir: Path, manifest_path: Path | None, nonce_hex: str | None, max_age: int,
           allow_software_keys: bool, policy_path: Path | None, policy_keys: tuple[str, ...], cdx_out: Path | None,
           html_out: Path | None) -> None:
    """Write the bill of materials of an attested airframe.

    The files are written even when the verification or the policy fails (they say so); the exit
    code is then 1, as `flightseal vet`'s."""
    from report.cyclonedx import to_cyclonedx
    from report.html import to_html

    if cdx_out is None and html_out is None:
        raise click.UsageError("give --cyclonedx FILE, --html FILE or both")
    policy: BuyerPolicy | None = None
    if policy_path is not None:
        policy, _ = read_policy(policy_path, policy_keys, trust_dir)
    v = gather(attestation, trust_dir, manifest_path, nonce_hex, max_age, allow_software_keys)
    bill = echo_verification(v, max_age)
    if bill is None:
        raise CheckFailed("the attestation matches no enrolled device: no bill written")
    findings: tuple[Finding, ...] | None = evaluate(policy, bill) if policy is not None else None
    if cdx_out is not None:
        write_atomic(cdx_out, to_cyclonedx(bill, findings).encode())
        click.echo(f"wrote CycloneDX 1.6 bill of {len(bill.entries)} components to {cdx_out}")
    if html_out is not None:
        write_atomic(html_out, to_html(bill, findings, policy).encode())
        click.echo(f"wrote the report to {html_out}")
    for f in findings or ():
        click.echo(f"FINDING {f}")
    if findings or not bill.verified:
        raise CheckFailed("")


def register(group: click.Group) -> None:
    group.add_command(report)
