"""A real MAVProxy with its console on a pipe: commands typed on stdin, what it prints read from a file.

The tests of the FlightSeal MAVProxy module (``agent/mavproxy_flightseal.py``) drive it as an operator
would, through ``fs …`` lines. Every wait is bounded and the process is always stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sim.launchers.mavproxy import MavProxy

MODULE = "agent.mavproxy_flightseal"


class Console:
    """MAVProxy on ``master`` with the FlightSeal module loaded, interactive on a pipe."""

    def __init__(self, master: str, workdir: Path, out_ports: Sequence[int] = (), extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        command = [c for c in MavProxy(master, out_ports, workdir, extra=extra).command() if c != "--non-interactive"]
        self.log = workdir / "console.out"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, cwd=workdir, stdin=subprocess.PIPE, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", "MAVLINK20": "1"})
        self.type(f"module load {MODULE}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def mark(self) -> int:
        return len(self.output())

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, text: str, since: int = 0, timeout: float = 30.0) -> str:
        """The output from ``since`` once it holds ``text``; fails with the tail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()[since:]
            if text in out:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"MAVProxy did not print {text!r} within {timeout:.0f} s:\n{self.output()[-3000:]}")

    def run(self, line: str, until: str, timeout: float = 30.0) -> str:
        """Type ``line`` and return what MAVProxy printed after it, once that holds ``until``."""
        since = self.mark()
        self.type(line)
        return self.wait(until, since, timeout)

    def stop(self) -> None:
        """End of input ends MAVProxy's console loop; SIGTERM, then SIGKILL, if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
