"""Cache of the last full flash read, so warm passes can check a CRC32 instead of reading 2 MB.

Keyed by FC unique id and firmware git hash. Kept in memory by the daemon; ``save``/``load``
let a CLI run reuse it. A corrupt cache file is ignored (the next pass reads in full), never
trusted in part.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from attest.errors import FormatError
from attest.limits import LIMITS
from hardware.files import read_state_json, write_atomic

MAX_CACHE_BYTES = LIMITS.max_image_cache_bytes
MAX_ENTRIES = LIMITS.max_image_cache_entries
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CachedImage:
    sha256: str
    crc32: int
    size: int
    read_at: float  # UNIX time of the full read


class ImageCache:
    """The last full read of the FC's flash per firmware identity, so a warm pass can trust a
    matching CRC32 for at most ``full_read_interval`` (a file the agent owns; a hostile one is
    ignored, never trusted)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: dict[str, CachedImage] = {}
        if path is not None:
            self._load(path)

    def get(self, key: str) -> CachedImage | None:
        return self.entries.get(key)

    def put(self, key: str, image: CachedImage) -> None:
        if len(self.entries) >= MAX_ENTRIES and key not in self.entries:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = image
        if self.path is not None:
            body = json.dumps({k: asdict(v) for k, v in self.entries.items()}, indent=1, sort_keys=True)
            write_atomic(self.path, body.encode(), mode=0o600)

    def _load(self, path: Path) -> None:
        try:  # a cache: anything unreadable (missing, a FIFO, too big, not JSON) is an empty one
            data = read_state_json(path, "image cache", MAX_CACHE_BYTES)
        except FormatError:
            return
        if not isinstance(data, dict):
            return
        for key, value in list(data.items())[:MAX_ENTRIES]:
            try:
                image = CachedImage(str(value["sha256"]), int(value["crc32"]), int(value["size"]),
                                    float(value["read_at"]))
            except (KeyError, TypeError, ValueError):
                continue
            if _SHA.match(image.sha256):
                self.entries[str(key)] = image
