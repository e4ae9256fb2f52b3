"""Exit codes and the exception a command raises when a check ran and failed."""

from __future__ import annotations

from typing import Any

import click

EXIT_OK = 0
EXIT_FAIL = 1  # a check ran and failed
EXIT_USAGE = 2  # usage error or unreadable input


class CheckFailed(click.ClickException):
    """A check ran and failed: exit 1; the reasons were already printed."""

    exit_code = EXIT_FAIL

    def show(self, file: Any = None) -> None:
        if self.message:
            click.echo(f"flightseal: {self.message}", err=True)
