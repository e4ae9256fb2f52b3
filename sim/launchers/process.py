"""What every simulator launcher shares: a context manager that keeps the working directory and log
of a run that failed (for the person reading the failure), and the tail of that log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Self


def stop_group(proc: subprocess.Popen[Any] | None, timeout: float) -> None:
    """Stop a simulator started in a session of its own: SIGTERM to its group (it shuts down cleanly and
    takes its shell children), SIGKILL if it is still there after ``timeout``. Only our own group."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


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
