"""STATUSTEXT as a ground station shows it: ArduPilot sends a text over 50 bytes in chunks.

``GCS::send_statustext`` gives the chunks of one long text the same non-zero ``id`` and counts
them in ``chunk_seq`` (seen on SITL: "Arm: Scripting: running CRC incorrect want: 0x3272DD" is
51 characters and came as two). Whoever matches on a text must join them first.
"""

from __future__ import annotations

from typing import Any


class StatusTexts:
    """The texts heard so far, chunks with the same non-zero ``id`` joined in ``chunk_seq`` order."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._open: dict[int, int] = {}  # id -> index in texts

    def add(self, msg: Any) -> None:
        text, ident = str(msg.text).rstrip("\x00"), int(getattr(msg, "id", 0))
        if ident == 0:
            self.texts.append(text)
        elif ident in self._open and int(getattr(msg, "chunk_seq", 0)) > 0:
            self.texts[self._open[ident]] += text
        else:
            self._open[ident] = len(self.texts)
            self.texts.append(text)
