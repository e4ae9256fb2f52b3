"""The agent's memory of the highest manifest it has trusted, so it never goes back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agent.files import read_bounded, write_atomic
from attest.errors import FormatError


@dataclass
class ManifestState:
    path: Path

    def load(self) -> tuple[int, str | None]:
        if not self.path.exists():
            return 0, None
        try:
            data = json.loads(read_bounded(self.path, "manifest state", 4096))
            return int(data["version"]), str(data["sha256"])
        except (ValueError, KeyError, TypeError):
            raise FormatError(f"manifest state {self.path}",
                              "is corrupt; restore it or re-provision the agent") from None

    def record(self, version: int, digest: str) -> None:
        current, _ = self.load()
        if version > current:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"version": version, "sha256": digest}).encode(), 0o600)
