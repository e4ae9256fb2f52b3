"""A step table for the demo: each step prints one line, and any step that does not behave as
expected stops the run (``StepFailed``, a failed check: exit 1 through the CLI's one exit-code map)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import click

from attest.errors import FlightSealError

T = TypeVar("T")


class StepFailed(FlightSealError):
    """A step ran but did not behave as the demo expects."""


@dataclass
class StepTable:
    rows: list[tuple[str, str, float, str]] = field(default_factory=list)

    def run(self, title: str, fn: Callable[[], T], describe: Callable[[T], str] = lambda _: "") -> T:
        start = time.monotonic()
        try:
            value = fn()
        except Exception as exc:
            elapsed = time.monotonic() - start
            self.rows.append((title, "FAIL", elapsed, str(exc)))
            click.echo(f"  FAIL  {title:<52} {elapsed:6.2f}s  {exc}")
            raise StepFailed(f"step '{title}' failed: {exc}") from exc
        elapsed = time.monotonic() - start
        detail = describe(value)
        self.rows.append((title, "ok", elapsed, detail))
        click.echo(f"  ok    {title:<52} {elapsed:6.2f}s  {detail}")
        return value
