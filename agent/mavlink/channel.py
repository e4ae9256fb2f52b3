"""What the gate client and the challenge responder send and receive through: one small shape.

On the companion it is the agent's :class:`~agent.mavlink.link.Link`, so their traffic goes
through ``Link.send`` (its lock, its lost-link handling, MAVLink2 signing) and what they receive
is observed like everything else (the heard table, forgeries, the daemon's listener). A tool on
the ground, or a test, may hand a bare pymavlink connection instead: :func:`channel_of` wraps it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Channel(Protocol):
    def send(self, msg: Any) -> None:
        """Send one pymavlink message, signed if the link signs."""

    def receive(self, timeout: float) -> Any:
        """The next message (any type), or None after ``timeout`` seconds."""

    def mavlink20(self) -> bool:
        """Whether the link speaks MAVLink2 (the gate takes nothing else)."""


class RawChannel:
    """A bare ``mavutil`` connection as a :class:`Channel` (ground-side tools and tests)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send(self, msg: Any) -> None:
        self.conn.mav.send(msg)

    def receive(self, timeout: float) -> Any:
        return self.conn.recv_match(blocking=True, timeout=timeout)

    def mavlink20(self) -> bool:
        return bool(self.conn.mavlink20()) if hasattr(self.conn, "mavlink20") else True


def channel_of(link_or_conn: Any) -> Channel:
    """``link_or_conn`` itself if it is a :class:`Channel` (a Link), else a bare connection wrapped."""
    return link_or_conn if isinstance(link_or_conn, Channel) else RawChannel(link_or_conn)
