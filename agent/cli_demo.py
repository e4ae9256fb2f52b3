"""``flightseal demo``: the README's first command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agent.steps import StepFailed


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("demo-out"), show_default=True,
              help="Where the demo writes its keys, manifest and attestations.")
@click.option("--files-only", is_flag=True, help="Only the attestation core on files: no FC, no TPM.")
def demo(out: Path, files_only: bool) -> None:
    """Run the end-to-end demo and exit non-zero if any step does not behave.

    Uses ArduPilot SITL when FLIGHTSEAL_SITL_BINARY is set, else the virtual FC; the device key is
    in swtpm. Shows arming accepted, then refused after tampering, and an operator challenge
    verified offline.
    """
    # The demo drives the rigs in sim/, which sit above the agent; imported here, at the edge.
    from sim.demo import run_demo
    from sim.demo_files import run_file_demo

    try:
        if files_only:
            click.echo("FlightSeal demo: the attestation core on files (keys, manifest, attestation, verify, tamper)")
            run_file_demo(out)
        else:
            click.echo("FlightSeal demo: flight controller + swtpm + agent + Lua arming gate")
            run_demo(out)
    except StepFailed as exc:
        click.echo(f"flightseal demo: {exc}", err=True)
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(demo)
