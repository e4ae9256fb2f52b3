"""The memory of the highest manifest (and root) version trusted, so neither ever goes back."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from attest import jsonio
from attest.errors import FormatError, RollbackError
from hardware.files import read_state_json, write_atomic

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_VERSION = 2**53  # a manifest version (attest.manifest bounds them the same way)


@dataclass
class ManifestState:
    """The highest version (and its digest) trusted so far, kept across restarts: what makes an
    older manifest or root a rollback. Written atomically; a torn or hostile file is refused
    (``FormatError``), never read as version 0."""

    path: Path
    kind: str = "manifest"  # or "root": the same record for the trust root (RootState)

    def load(self) -> tuple[int, str | None]:
        what = f"{self.kind} state {self.path}"
        try:
            data = read_state_json(self.path, f"{self.kind} state", 4096)
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


def check_root(state: ManifestState, version: int, digest: str) -> None:
    """Refuse a root older than the highest one trusted here, or another root of the same version
    (issue 11: an older root could be put back, as no root version was kept)."""
    highest, recorded = state.load()
    if version < highest:
        raise RollbackError(f"root version {version} is older than version {highest} already trusted here: an older "
                            "root was put back; restore the newest root")
    if version == highest and recorded is not None and digest != recorded:
        raise RollbackError(f"root version {version} differs from the trusted root of the same version")
