"""``flightseal agent run``: the onboard daemon."""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from agent.config import AgentConfig, load
from attest.errors import FormatError

_SERIAL0_HINTS = (re.compile(r"^/dev/ttyACM\d+"), re.compile(r"^tcp:[^:]+:57[6-9]0$"))


def looks_like_serial0(url: str) -> bool:
    """USB CDC devices and SITL's SERIAL0 ports (5760+10·i) are the FC's SERIAL0: unsigned packets
    are accepted there even with MAVLink2 signing on, so the agent does not use them unless told."""
    return any(p.match(url) for p in _SERIAL0_HINTS)


@click.group("agent")
def agent() -> None:
    """The onboard attestation agent."""


@agent.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info", show_default=True)
def run(config_path: Path, log_level: str) -> None:
    """Run until SIGTERM/SIGINT: measure, appraise, seal, gate, watch, answer challenges."""
    from agent.cli.measure import load_signing_key
    from agent.daemon import Daemon
    from hardware.uri import load_signer

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s flightseal-agent %(levelname)s %(message)s")
    cfg: AgentConfig = load(config_path)
    if looks_like_serial0(cfg.mavlink.url) and not cfg.mavlink.allow_serial0:
        raise FormatError(f"config {config_path}", f"{cfg.mavlink.url} looks like the FC's SERIAL0/USB port, which "
                          "accepts unsigned packets; use a telemetry port or set allow_serial0 = true", "mavlink.url")
    key = Path(cfg.mavlink.signing_key_file) if cfg.mavlink.signing_key_file else None
    daemon = Daemon(cfg, load_signer(cfg.device.key), signing_key=load_signing_key(key), config_path=config_path)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.run(stop)


def register(group: click.Group) -> None:
    group.add_command(agent)
