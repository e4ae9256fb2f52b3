"""The verifier's trust directory: the pinned root, enrolled devices, the manifest, and state.

Layout::

    trust/
      root.json            pinned root (DSSE envelope), copied in out of band; a newer one must
                           follow from the root in force (roots/<N>.root.json in between)
      root-trusted.json    the root in force here, and root-state.json its version (the verifier)
      manifest.json        the current signed manifest
      devices/*.json       signed device enrollments
      state.json           highest manifest version trusted so far (written by the verifier)
      clocks.json          per device, the TPM clock and counters of the last quote that passed
      tpm-cas/*.pem        optional: TPM vendor CAs; a tpm device's EK certificate must chain to one
                           (ADR 0018; without the folder, the manufacturer's check stands alone)

Reading it is the only I/O the offline verifier does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from attest import jsonio
from attest.enrollment import DeviceRecord
from attest.errors import FlightSealError, FormatError
from attest.limits import LIMITS
from attest.quote import ClockInfo
from attest.tpm_evidence import load_cas
from attest.trust import TrustedState
from hardware.files import read_bounded, read_state_json, write_atomic
from truststore.manifest_state import ManifestState
from truststore.root_store import RootStore

MAX_DEVICES = LIMITS.max_devices
MAX_TPM_CA_FILES = LIMITS.max_tpm_ca_files
MAX_TPM_CA_BYTES = LIMITS.max_tpm_ca_bytes


@dataclass
class TrustDir:
    """The verifier's trust directory (see the module docstring for its layout).

    Raises (from its readers):
        FormatError: a file is missing, too large, not a regular file, or malformed.
        FlightSealError: the root or an enrolment does not verify against the root in force."""

    path: Path
    _root_store: RootStore | None = field(default=None, init=False, repr=False)

    @property
    def root_path(self) -> Path:
        return self.path / "root.json"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    def trusted_state(self) -> TrustedState:
        """The trusted state under ``root.json``, which must follow from the root in force here
        (``root-trusted.json``; a newer root only through ``roots/<N>.root.json``, see truststore.root_store)."""
        if not self.root_path.exists():
            raise FormatError(f"trust directory {self.path}", "has no root.json; copy the pinned root there")
        return self._roots.load()

    @property
    def _roots(self) -> RootStore:
        if self._root_store is None:
            self._root_store = RootStore(self.root_path, self.path)
        return self._root_store

    def record_root(self) -> None:
        """After a verification passed: the root it used (``trusted_state``) is the root in force here."""
        self._roots.accept()

    def devices(self, state: TrustedState) -> list[DeviceRecord]:
        """Every enrollment that verifies against the root; one that does not is an error, not skipped."""
        folder = self.path / "devices"
        if not folder.is_dir():
            return []
        files = sorted(folder.glob("*.json"))[:MAX_DEVICES]
        out = []
        for f in files:
            try:
                out.append(state.verify_enrollment(read_bounded(f, "enrollment", LIMITS.max_enrollment_bytes)))
            except FlightSealError as exc:
                raise FormatError(f"enrollment {f}", str(exc)) from None
        return out

    def tpm_cas(self) -> list[x509.Certificate]:
        """The TPM vendor CAs in ``tpm-cas/`` (PEM files, roots and intermediates), or none."""
        folder = self.path / "tpm-cas"
        if not folder.is_dir():
            return []
        out: list[x509.Certificate] = []
        for f in sorted(folder.glob("*.pem"))[:MAX_TPM_CA_FILES]:
            out += load_cas(read_bounded(f, "TPM vendor CA", MAX_TPM_CA_BYTES), f"TPM vendor CA {f}")
        return out

    def manifest_bytes(self, override: Path | None = None) -> bytes:
        return read_bounded(override or self.manifest_path, "manifest", LIMITS.max_manifest_bytes)

    def highest_manifest(self) -> tuple[int, str | None]:
        return ManifestState(self.state_path).load()

    def record_manifest(self, version: int, digest: str) -> None:
        ManifestState(self.state_path).record(version, digest)

    @property
    def clocks_path(self) -> Path:
        return self.path / "clocks.json"

    def device_clocks(self) -> dict[str, ClockInfo]:
        """The last accepted TPM clock per device, so a replayed older quote is refused."""
        what = f"clocks {self.clocks_path}"
        try:
            data = read_state_json(self.clocks_path, "clocks", 1024 * 1024)
            if data is None:
                return {}
            if not isinstance(data, dict):
                raise FormatError(what, "must be an object of device ids")
            out = {}
            for dev, entry in data.items():
                c = jsonio.expect_object(entry, what, {"clock", "reset_count", "restart_count", "safe"})
                out[dev] = ClockInfo(jsonio.expect_int(c["clock"], what, "clock", 0, 2**64 - 1),
                                     jsonio.expect_int(c["reset_count"], what, "reset_count", 0, 2**32 - 1),
                                     jsonio.expect_int(c["restart_count"], what, "restart_count", 0, 2**32 - 1),
                                     jsonio.expect_bool(c["safe"], what, "safe"))
            return out
        except FormatError as exc:
            raise FormatError(what, f"is corrupt ({f'{exc.field}: ' if exc.field else ''}{exc.detail}); restore it "
                              "from a backup") from None

    def record_clock(self, device_id: str, clock: ClockInfo) -> None:
        clocks = self.device_clocks()
        clocks[device_id] = clock
        body = {dev: {"clock": c.clock, "reset_count": c.reset_count, "restart_count": c.restart_count,
                      "safe": c.safe} for dev, c in sorted(clocks.items())}
        write_atomic(self.clocks_path, json.dumps(body, indent=1).encode())
