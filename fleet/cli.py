"""`flightseal fleet ...`, registered through the `flightseal.commands` entry point (placeholder until the service lands)."""

from __future__ import annotations

import click


@click.group("fleet")
def fleet() -> None:
    """The fleet service: one view of every airframe's attestations."""


def register(group: click.Group) -> None:
    group.add_command(fleet)
