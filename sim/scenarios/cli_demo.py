"""``flightseal demo``: the README's first command, registered by the rigs' package.

The demo drives the rigs in ``sim/``, which sit above the agent, so the product (``agent/``) does
not import it: ``pyproject.toml`` registers :func:`register` in the ``flightseal.commands`` entry
point group, and ``agent/cli/main.py`` adds every command found there (issue 13).
"""

from __future__ import annotations

from pathlib import Path

import click


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
    from sim.scenarios.demo import run_demo
    from sim.scenarios.demo_files import run_file_demo

    # a step that does not behave raises StepFailed (a FlightSealError): exit 1 through the CLI's map
    if files_only:
        click.echo("FlightSeal demo: the attestation core on files (keys, manifest, attestation, verify, tamper)")
        run_file_demo(out)
    else:
        click.echo("FlightSeal demo: flight controller + swtpm + agent + Lua arming gate")
        run_demo(out)


def register(group: click.Group) -> None:
    group.add_command(demo)
