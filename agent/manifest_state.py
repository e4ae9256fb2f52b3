"""The agent's memory of the highest manifest it has trusted, so it never goes back."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from agent.files import read_state_json, write_atomic
from attest import jsonio
from attest.errors import FormatError

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_VERSION = 2**53  # a manifest version (attest.manifest bounds them the same way)


@dataclass
class ManifestState:
    path: Path

    def load(self) -> tuple[int, str | None]:
        what = f"manifest state {self.path}"
        try:
            data = read_state_json(self.path, "manifest state", 4096)
            if data is None:
                return 0, None
            obj = jsonio.expect_object(data, what, {"version", "sha256"})
            version = jsonio.expect_int(obj["version"], what, "version", 1, MAX_VERSION)
            digest = jsonio.expect_str(obj["sha256"], what, "sha256")
            if not SHA256_HEX.fullmatch(digest):
                raise FormatError(what, "must be 64 lowercase hex digits", "sha256")
            return version, digest
        except FormatError as exc:
            raise FormatError(what, f"is corrupt ({f'{exc.field}: ' if exc.field else ''}{exc.detail}); restore it or "
                              "re-provision") from None

    def record(self, version: int, digest: str) -> None:
        current, _ = self.load()
        if version > current:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"version": version, "sha256": digest}).encode(), 0o600)
