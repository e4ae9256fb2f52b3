"""A throw-away network namespace with only loopback, for rigs that use multicast.

SITL's simulated CAN bus is multicast UDP (239.65.82.<bus>:57732). On a host, multicast follows
the default route and leaves the machine; in a namespace of our own whose only interface is
``lo`` (with the multicast range routed to it) every packet stays on this machine, and two rigs
in two namespaces cannot hear each other's bus. Needs root and iproute2's ``ip``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

from attest.errors import FlightSealError
from sim.launchers.service import Service


class NetnsError(FlightSealError):
    """The namespace could not be made (not root, no ``ip``, or the kernel refused)."""


def unavailable_reason() -> str | None:
    """Why a namespace cannot be made here, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    return None


class LoopbackNamespace(Service):
    def __init__(self, prefix: str = "flightseal") -> None:
        self.name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.created = False

    def _ip(self, *args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
        if r.returncode != 0:
            raise NetnsError(f"ip {' '.join(args)} failed: {r.stderr.strip() or r.returncode}")

    def start(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise NetnsError(reason)
        self._ip("netns", "add", self.name)
        self.created = True
        try:
            self._ip("-n", self.name, "link", "set", "lo", "up")
            self._ip("-n", self.name, "link", "set", "lo", "multicast", "on")
            self._ip("-n", self.name, "route", "add", "224.0.0.0/4", "dev", "lo")
        except NetnsError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10, check=False)
            self.created = False

    def prefix(self) -> list[str]:
        """Put this before a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]
