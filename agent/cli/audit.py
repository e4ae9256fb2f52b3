"""``flightseal audit verify``: check the agent's hash-chained audit log."""

from __future__ import annotations

from pathlib import Path

import click

from agent.audit import AuditError, scan
from agent.cli.options import CheckFailed


@click.group("audit")
def audit() -> None:
    """Inspect the agent's audit log."""


@audit.command("verify")
@click.argument("log", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def verify(log: Path) -> None:
    """Check the hash chain. Exit 0 intact, 1 broken or torn."""
    try:
        report = scan(log)
    except AuditError as exc:
        click.echo(f"FAIL {exc}")
        raise CheckFailed("") from None
    click.echo(f"{report.records} records chain correctly; last hash {report.last_hash[:16]}…")
    if report.torn_bytes:
        click.echo(f"FAIL torn last record: {report.torn_bytes} bytes after record {report.records} "
                   "(power loss?); earlier records are valid, the agent sets the tail aside on its next start")
        raise CheckFailed("")


def register(group: click.Group) -> None:
    group.add_command(audit)
