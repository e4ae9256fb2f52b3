"""``flightseal demo``: the README's first command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agent.steps import StepFailed


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("demo-out"), show_default=True,
              help="Where the demo writes its keys, manifest and attestations.")
def demo(out: Path) -> None:
    """Run the end-to-end demo and exit non-zero if any step does not behave."""
    from agent.demo_files import run_file_demo

    click.echo("FlightSeal demo: the attestation core on files (keys, manifest, attestation, verify, tamper)")
    try:
        run_file_demo(out)
    except StepFailed as exc:
        click.echo(f"flightseal demo: {exc}", err=True)
        sys.exit(1)
    click.echo(f"demo passed; files in {out}/")


def register(group: click.Group) -> None:
    group.add_command(demo)
