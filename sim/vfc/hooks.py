"""How an arming-check provider (the Lua gate under lupa) plugs into the virtual FC.

On ArduPilot the FlightSeal gate is a Lua script: it reads MAVLink frames from every channel,
sends frames of its own, runs on a timer, and vetoes arming through auxiliary authorisation.
The virtual FC gives a provider exactly those powers and nothing else:

* :class:`VehicleBus` is what the vehicle offers the provider (Lua's ``mavlink:send_chan``,
  ``gcs:send_text``, ``millis()``);
* :class:`ArmingAuthority` is what the vehicle asks of the provider. Every call comes from the
  virtual FC's own thread, so a provider needs no locking of its own.

The default, :class:`AllowArming`, is an FC without the gate script: arming is allowed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class VehicleBus(Protocol):
    """The vehicle side, handed to the provider at every boot."""

    @property
    def sysid(self) -> int: ...

    @property
    def compid(self) -> int: ...

    def channels(self) -> list[int]:
        """Channel indices with a connected client (channel 0 is SERIAL0, 1 is SERIAL1, ...)."""
        ...

    def send_payload(self, channel: int, msgid: int, payload: bytes) -> bool:
        """Frame ``payload`` as message ``msgid`` from this vehicle and send it (Lua ``send_chan``)."""
        ...

    def send_frame(self, channel: int, frame: bytes) -> bool:
        """Send an already framed MAVLink packet as is."""
        ...

    def send_text(self, severity: int, text: str) -> None:
        """STATUSTEXT to every channel heard from since boot (Lua ``gcs:send_text``)."""
        ...

    def time_ms(self) -> int:
        """Milliseconds since boot (Lua ``millis()``)."""
        ...


@runtime_checkable
class ArmingAuthority(Protocol):
    """The provider side. ``boot`` starts it afresh (a reboot restarts Lua too)."""

    def boot(self, bus: VehicleBus) -> None: ...

    def shutdown(self) -> None:
        """The vehicle reboots or stops; the next ``boot`` starts from scratch."""
        ...

    def on_frame(self, channel: int, frame: bytes) -> None:
        """Every valid MAVLink frame the vehicle received, with the channel it came in on."""
        ...

    def tick(self, now_ms: int) -> None:
        """Called about every 10 ms with the vehicle time since boot."""
        ...

    def is_command_blocked(self, command: int) -> bool:
        """True when the provider took this COMMAND_LONG for itself (Lua ``block_command``):
        the vehicle then neither handles nor acknowledges it."""
        ...

    def arming_check(self) -> tuple[bool, str]:
        """``(True, "")`` to allow arming, else ``(False, reasons)``; the vehicle shows each line of
        the reasons as ``PreArm: <line>`` every pre-arm period and as ``Arm: <line>`` on a refused arm."""
        ...

    def set_armed(self, armed: bool) -> None:
        """The vehicle armed or disarmed."""
        ...

    def scripting_command(self, action: int) -> int:
        """MAV_CMD_SCRIPTING with ``param1 = action``: the MAV_RESULT the vehicle acks with."""
        ...

    def checksums(self) -> tuple[int, int] | None:
        """The (loaded, running) script checksums, or None without scripting."""
        ...


class AllowArming:
    """No gate installed: every arming check passes."""

    def __init__(self) -> None:
        self.armed = False
        self.frames = 0

    def boot(self, bus: VehicleBus) -> None:
        self.armed = False

    def shutdown(self) -> None:
        pass

    def on_frame(self, channel: int, frame: bytes) -> None:
        self.frames += 1

    def tick(self, now_ms: int) -> None:
        pass

    def is_command_blocked(self, command: int) -> bool:
        return False

    def arming_check(self) -> tuple[bool, str]:
        return True, ""

    def set_armed(self, armed: bool) -> None:
        self.armed = armed

    def scripting_command(self, action: int) -> int:
        return 3  # MAV_RESULT_UNSUPPORTED: a firmware without scripting

    def checksums(self) -> tuple[int, int] | None:
        return None


class DenyArming(AllowArming):
    """A fixed refusal, like the one-line Lua script of the ``prearm`` capture."""

    def __init__(self, reason: str = "FlightSeal: waiting") -> None:
        super().__init__()
        self.reason = reason

    def arming_check(self) -> tuple[bool, str]:
        return False, self.reason
