"""The ``flightseal`` command.

Each command group lives in its own module (``cli_*.py``) and is registered here. This module
owns the one rule every command follows: a user mistake or a failed check is one clear line on
stderr and a non-zero exit code, never a traceback.

Exit codes: 0 success / pass; 1 a check failed (verification, appraisal, audit); 2 usage error or
unusable input (missing file, bad JSON, wrong key, an FC that cannot be reached). No command exits by
itself: each raises, and this map alone picks the code (attest/errors.py has the convention).
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

import click

from agent import __version__
from agent.cli.options import EXIT_FAIL, EXIT_USAGE
from attest.errors import FlightSealError, FormatError, KeyLoadError

PLUGIN_GROUP = "flightseal.commands"


class FlightSealGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (FormatError, KeyLoadError) as exc:
            click.echo(f"flightseal: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except FlightSealError as exc:
            from agent.mavlink.link import LinkError  # late: pymavlink is not loaded for commands that never link

            if isinstance(exc, LinkError):  # the FC at the URL given cannot be reached or used: unusable input
                click.echo(f"flightseal: error: {exc}", err=True)
                sys.exit(EXIT_USAGE)
            click.echo(f"flightseal: failed: {exc}", err=True)
            sys.exit(EXIT_FAIL)
        except OSError as exc:
            name = f" {exc.filename}" if exc.filename else ""
            click.echo(f"flightseal: error:{name}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=FlightSealGroup)
@click.version_option(__version__, prog_name="flightseal")
def main() -> None:
    """FlightSeal: prove what runs on a drone, and refuse to arm when it is not what was approved."""


def _register() -> None:
    from agent.cli import (
        agent,
        audit,
        bootloader,
        challenge,
        gate,
        keys,
        manifest,
        measure,
        policy,
        report,
        signing,
        trust,
        verify,
        vet,
    )

    modules = (agent, audit, bootloader, challenge, gate, keys, manifest, measure, policy, report, signing, trust,
               verify, vet)
    for module in modules:
        module.register(main)
    # Commands of other packages (the rigs' `demo`) come through the entry point group, so the product
    # never imports them; a package that is not installed just adds no command.
    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()(main)


_register()
