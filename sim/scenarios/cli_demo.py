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
@click.option("--fc", "fc", type=click.Choice(["ardupilot", "px4"]), default="ardupilot", show_default=True,
              help="The flight controller: ArduPilot (Lua gate) or PX4 (its arm authorization asks the agent).")
def demo(out: Path, files_only: bool, fc: str) -> None:
    """Run the end-to-end demo and exit non-zero if any step does not behave.

    ArduPilot: SITL when FLIGHTSEAL_SITL_BINARY is set, else the virtual FC. PX4 (--fc px4): PX4
    SITL when FLIGHTSEAL_PX4_SITL is set, else the virtual PX4. The device key is in swtpm. Shows
    arming accepted, then refused after tampering, and an operator challenge verified offline.
    """
    from sim.scenarios.demo import run_demo
    from sim.scenarios.demo_files import run_file_demo

    # a step that does not behave raises StepFailed (a FlightSealError): exit 1 through the CLI's map
    if files_only:
        click.echo("FlightSeal demo: the attestation core on files (keys, manifest, attestation, verify, tamper)")
        run_file_demo(out)
    elif fc == "px4":
        from sim.scenarios.demo_px4 import run_px4_demo

        click.echo("FlightSeal demo: PX4 + swtpm + agent as PX4's arm authorizer")
        run_px4_demo(out)
    else:
        click.echo("FlightSeal demo: flight controller + swtpm + agent + Lua arming gate")
        run_demo(out)


def register(group: click.Group) -> None:
    group.add_command(demo)
