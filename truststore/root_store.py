"""Which trust root is in force here, and the one way it changes: through the root before it.

The root file an operator installs (the agent's ``trust.root``, a trust dir's ``root.json``) is
what is *offered*; the root *in force* is the copy kept beside the state, ``root-trusted.json``.
The rules are python-tuf's root rotation (issue 11: before this, any self-signed root of a higher
version was taken, so whoever could write the root file could replace every key):

* **first use**: the installed root is pinned (that is provisioning) and a copy is kept;
* **the same bytes** as the copy: nothing to check;
* **a newer version**: only through a chain from the copy, each step version N+1 signed by a
  threshold of version N's root keys *and* of its own (``TrustedState.update_root``). Roots between
  the two are read from ``roots/<N>.root.json`` beside the installed root;
* **an older version, or another root of the same version**: refused as a rollback.

The copy (and ``root-state.json``, the version and digest) is written only by :meth:`RootStore.accept`:
by the agent once the root loaded, by the verifier after a verification passed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from attest import dsse
from attest.errors import FlightSealError, FormatError, RollbackError
from attest.limits import LIMITS
from attest.root import Root
from attest.trust import TrustedState
from hardware.files import read_bounded, write_atomic
from truststore.manifest_state import ManifestState, check_root

TRUSTED_COPY = "root-trusted.json"
MAX_CHAIN = LIMITS.max_root_rotations


def _root_version(data: bytes, what: str) -> int:
    env = dsse.Envelope.from_bytes(data, what, LIMITS.max_root_bytes)
    return Root.from_json(env.payload_json(what, LIMITS.max_root_bytes)).version


def _pinned(data: bytes, what: str) -> TrustedState:
    try:
        return TrustedState(data)
    except FormatError as exc:
        raise FormatError(what, f"{exc.field + ': ' if exc.field else ''}{exc.detail}") from None


@dataclass
class RootStore:
    """The root in force on this machine, and its rotation through the roots in between (ADR 0017).

    Raises:
        FormatError: a root file is missing or malformed.
        SignatureError, RollbackError, ExpiredMetadataError: a newer root does not follow from
            the one in force."""

    installed: Path  # the root file offered (trust.root, trust/root.json)
    state_dir: Path  # where the copy in force and root-state.json live
    _raw: bytes | None = field(default=None, init=False, repr=False)
    _version: int = field(default=0, init=False, repr=False)

    @property
    def copy_path(self) -> Path:
        return self.state_dir / TRUSTED_COPY

    @property
    def state(self) -> ManifestState:
        return ManifestState(self.state_dir / "root-state.json", "root")

    @property
    def chain_dir(self) -> Path:
        return self.installed.parent / "roots"

    def load(self) -> TrustedState:
        """The trusted state under the installed root, if it follows from the root in force here.

        Raises FormatError (unreadable), SignatureError/ThresholdError (a step not approved) or
        RollbackError (older, or a different root of the same version), each naming the file.
        """
        raw = read_bounded(self.installed, "root", LIMITS.max_root_bytes)
        what = f"root {self.installed}"
        if self.copy_path.is_symlink():
            raise FormatError(f"trusted root copy {self.copy_path}", "is a symbolic link; state files must be "
                              "regular files")
        copy = read_bounded(self.copy_path, "trusted root copy", LIMITS.max_root_bytes) \
            if self.copy_path.exists() else None
        if copy is None or copy == raw:
            state = _pinned(raw, what)
            check_root(self.state, state.root.version, hashlib.sha256(raw).hexdigest())
            if copy is None:
                self._no_copy_yet(state.root.version, raw)
        else:
            state = self._chain(_pinned(copy, f"trusted root copy {self.copy_path}"), raw, what)
        self._raw, self._version = raw, state.root.version
        return state

    def _no_copy_yet(self, version: int, raw: bytes) -> None:
        """A state dir from before copies were kept: only the recorded root itself may be pinned again."""
        highest, digest = self.state.load()
        if highest and digest != hashlib.sha256(raw).hexdigest():
            raise RollbackError(f"root {self.installed} (version {version}) replaces version {highest}, but no copy "
                                f"of version {highest} is kept in {self.state_dir} to check that its keys approved "
                                f"the change: put root version {highest} back, run once, then install the new root")

    def _chain(self, state: TrustedState, raw: bytes, what: str) -> TrustedState:
        trusted = state.root.version
        offered = _root_version(raw, what)
        if offered < trusted:
            raise RollbackError(f"{what} is version {offered}, older than version {trusted} in force here: an older "
                                "root was put back; install the newest root")
        if offered == trusted:
            raise RollbackError(f"{what} is version {offered} but differs from the root of that version in force here")
        if offered - trusted > MAX_CHAIN:
            raise RollbackError(f"{what} is version {offered}, {offered - trusted} versions after the root in force "
                                f"(version {trusted}); at most {MAX_CHAIN} are crossed at once")
        for version in range(trusted + 1, offered + 1):
            step_path = self.installed if version == offered else self.chain_dir / f"{version}.root.json"
            if not step_path.exists():
                raise RollbackError(f"{what} is version {offered}, but the root in force is version {trusted} and "
                                    f"{step_path} (version {version}) is missing: each root must be approved by the "
                                    "one before it; put the roots in between there")
            step = raw if step_path == self.installed else read_bounded(step_path, "root", LIMITS.max_root_bytes)
            try:
                state.update_root(step)
            except FormatError as exc:
                raise FormatError(f"root {step_path}", f"{exc.field + ': ' if exc.field else ''}{exc.detail}") \
                    from None
            except FlightSealError as exc:  # SignatureError, ThresholdError, RollbackError: same class, named
                raise type(exc)(f"root {step_path} (version {version}) does not follow the trusted version "
                                f"{version - 1}: {exc}") from None
        return state

    def accept(self) -> None:
        """The root ``load`` returned is in force from now on: keep its copy and record its version."""
        if self._raw is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.copy_path.exists() or read_bounded(self.copy_path, "trusted root copy",
                                                       LIMITS.max_root_bytes) != self._raw:
            write_atomic(self.copy_path, self._raw, 0o600)
        self.state.record(self._version, hashlib.sha256(self._raw).hexdigest())
