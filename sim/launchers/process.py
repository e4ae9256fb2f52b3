"""What every simulator launcher shares: a context manager that keeps the working directory and log
of a run that failed (for the person reading the failure), and the tail of that log."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self


class Launched:
    """Mixin for a launcher with ``start() -> Self``, ``stop()``, ``keep`` and ``log_path``."""

    keep: bool
    log_path: Path

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.keep = True  # the run failed: its files stay for whoever reads the failure
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
