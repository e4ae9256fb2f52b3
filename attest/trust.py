"""The trusted-metadata state machine: every trust decision about signed metadata lives here.

Rules, in the spirit of python-tuf's ``TrustedMetadataSet``:

* A root is trusted only if pinned out of band, or if it is version N+1 of a trusted root and
  is signed by a threshold of **both** the old root's ``root`` keys and its own.
* The manifest is verified against the current root's ``manifest`` role: payload type, then a
  threshold of distinct authorised signatures, then its content.
* Versions never go back: the caller persists the highest manifest version it has trusted and
  hands it in; a lower one is a rollback. An equal version must be the same document.
* Expiry is checked against a time the caller supplies, after the signatures (an attacker can
  always produce expired metadata; only the signed expiry is worth reading).
* Device enrollments are verified against the ``enrollment`` role.

It does no I/O: bytes in, verified values or a named exception out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from attest import dsse
from attest.enrollment import DeviceRecord
from attest.errors import ExpiredMetadataError, RollbackError
from attest.limits import LIMITS
from attest.manifest import Manifest
from attest.root import Root


@dataclass(frozen=True)
class VerifiedManifest:
    manifest: Manifest
    digest: str  # SHA-256 of the signed payload: what attestations reference
    signers: frozenset[str]


class TrustedState:
    """The trust state machine (python-tuf's ``TrustedMetadataSet``): the pinned root, rotated
    only through roots the one in force signs, and manifests verified against it.

    Raises (from the constructor and ``update_root``/``verify_manifest``):
        FormatError: the bytes are not a signed root or manifest.
        SignatureError, ThresholdError: too few of the role's keys signed.
        ExpiredMetadataError: the root or manifest is past its expiry.
        RollbackError: a lower version than one already trusted."""

    def __init__(self, pinned_root: bytes) -> None:
        env = dsse.Envelope.from_bytes(pinned_root, "root", LIMITS.max_root_bytes)
        root = Root.from_json(env.payload_json("root", LIMITS.max_root_bytes))
        dsse.verify(env, dsse.ROOT_PAYLOAD_TYPE, root.role_keys("root"), root.roles["root"].threshold, "root")
        self.root = root
        # Signature checks of exact manifest bytes already verified under this root (a verifier
        # checks many attestations against one manifest). Version and expiry are re-checked on
        # every call; the cache is dropped when the root changes.
        self._signed_manifests: dict[bytes, tuple[Manifest, str, frozenset[str]]] = {}

    def update_root(self, data: bytes) -> Root:
        env = dsse.Envelope.from_bytes(data, "root", LIMITS.max_root_bytes)
        dsse.verify(env, dsse.ROOT_PAYLOAD_TYPE, self.root.role_keys("root"),
                    self.root.roles["root"].threshold, "new root (signatures by the old root's keys)")
        new = Root.from_json(env.payload_json("root", LIMITS.max_root_bytes))
        if new.version != self.root.version + 1:
            raise RollbackError(f"root version {new.version} does not follow trusted version {self.root.version}")
        dsse.verify(env, dsse.ROOT_PAYLOAD_TYPE, new.role_keys("root"), new.roles["root"].threshold,
                    "new root (signatures by its own keys)")
        self.root = new
        self._signed_manifests.clear()
        return new

    def check_root_fresh(self, now: datetime) -> None:
        if now >= self.root.expires:
            raise ExpiredMetadataError(f"root version {self.root.version} expired at {self.root.expires:%Y-%m-%d}")

    def verify_manifest(self, data: bytes, now: datetime, highest_seen: int = 0,
                        highest_digest: str | None = None) -> VerifiedManifest:
        manifest, digest, signers = self._signed_manifest(data)
        if manifest.version < highest_seen:
            raise RollbackError(
                f"manifest version {manifest.version} is older than version {highest_seen} already trusted"
            )
        if manifest.version == highest_seen and highest_digest and digest != highest_digest:
            raise RollbackError(f"manifest version {manifest.version} differs from the trusted one of the "
                                "same version")
        self.check_root_fresh(now)
        if now >= manifest.expires:
            raise ExpiredMetadataError(
                f"manifest version {manifest.version} expired at {manifest.expires:%Y-%m-%dT%H:%MZ}; "
                "ask the manufacturer for a re-signed manifest"
            )
        return VerifiedManifest(manifest, digest, signers)

    def _signed_manifest(self, data: bytes) -> tuple[Manifest, str, frozenset[str]]:
        key = hashlib.sha256(data).digest()
        cached = self._signed_manifests.get(key)
        if cached is not None:
            return cached
        env = dsse.Envelope.from_bytes(data, "manifest", LIMITS.max_manifest_bytes)
        signers = dsse.verify(env, dsse.MANIFEST_PAYLOAD_TYPE, self.root.role_keys("manifest"),
                              self.root.roles["manifest"].threshold, "manifest")
        manifest = Manifest.from_json(env.payload_json("manifest", LIMITS.max_manifest_bytes))
        result = (manifest, hashlib.sha256(env.payload).hexdigest(), frozenset(signers))
        if len(self._signed_manifests) >= 16:
            self._signed_manifests.clear()
        self._signed_manifests[key] = result
        return result

    def verify_enrollment(self, data: bytes) -> DeviceRecord:
        env = dsse.Envelope.from_bytes(data, "device enrollment", LIMITS.max_enrollment_bytes)
        dsse.verify(env, dsse.DEVICE_PAYLOAD_TYPE, self.root.role_keys("enrollment"),
                    self.root.roles["enrollment"].threshold, "device enrollment")
        return DeviceRecord.from_json(env.payload_json("device enrollment", LIMITS.max_enrollment_bytes))
