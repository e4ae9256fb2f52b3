"""The trust root: which keys may sign what, and how many of them must agree.

Like TUF's root role, the root lists keys and, per role, the key ids allowed and a threshold:
``root`` (who may rotate the root), ``manifest`` (who approves firmware and parts) and
``enrollment`` (who vouches that a device key belongs to an airframe). Operators pin a root
out of band; a newer root is trusted only when signed by a threshold of the old root's keys
*and* of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from attest import jsonio, timeutil
from attest.errors import FormatError
from attest.keys import PublicKey
from attest.limits import LIMITS

ROOT_TYPE = "flightseal/root"
ROLES = ("root", "manifest", "enrollment")


@dataclass(frozen=True)
class Role:
    """A role's authorised key ids and the threshold of distinct keys that must sign."""

    keyids: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Root:
    """The manufacturer's root of trust: its roles (root, manifest, enrolment) with their keys and
    thresholds, a version and an expiry. Verified only through :class:`attest.trust.TrustedState`."""

    version: int
    expires: datetime
    keys: dict[str, PublicKey]
    roles: dict[str, Role]

    def role_keys(self, role: str) -> dict[str, PublicKey]:
        return {k: self.keys[k] for k in self.roles[role].keyids}

    def to_json(self) -> dict[str, Any]:
        return {
            "_type": ROOT_TYPE,
            "version": self.version,
            "expires": timeutil.format(self.expires),
            "keys": {k: v.to_json() for k, v in sorted(self.keys.items())},
            "roles": {n: {"keyids": list(r.keyids), "threshold": r.threshold} for n, r in self.roles.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Root:
        what = "root"
        obj = jsonio.expect_object(data, what, {"_type", "version", "expires", "keys", "roles"})
        if obj["_type"] != ROOT_TYPE:
            raise FormatError(what, f"_type is {obj['_type']!r}, expected {ROOT_TYPE!r}", "_type")
        keys_obj = obj["keys"]
        if not isinstance(keys_obj, dict) or len(keys_obj) > LIMITS.max_keys:
            raise FormatError(what, f"must be an object of at most {LIMITS.max_keys} keys", "keys")
        keys: dict[str, PublicKey] = {}
        for keyid, kdata in keys_obj.items():
            key = PublicKey.from_json(kdata, f"root key {keyid[:12]}")
            if key.keyid != keyid:
                raise FormatError(what, "key id does not match the key it names", f"keys.{keyid}")
            keys[keyid] = key
        roles_obj = jsonio.expect_object(obj["roles"], what, set(ROLES), field="roles")
        roles: dict[str, Role] = {}
        for name in ROLES:
            r = jsonio.expect_object(roles_obj[name], what, {"keyids", "threshold"}, field=f"roles.{name}")
            keyids = tuple(jsonio.expect_str_list(r["keyids"], what, f"roles.{name}.keyids", LIMITS.max_keys))
            if len(set(keyids)) != len(keyids):
                raise FormatError(what, "a key id is listed twice", f"roles.{name}.keyids")
            for k in keyids:
                if k not in keys:
                    raise FormatError(what, f"key id {k[:12]}… is not in keys", f"roles.{name}.keyids")
            threshold = jsonio.expect_int(r["threshold"], what, f"roles.{name}.threshold", 1, LIMITS.max_keys)
            if threshold > len(keyids):
                raise FormatError(what, f"threshold {threshold} exceeds the {len(keyids)} keys listed",
                                  f"roles.{name}.threshold")
            roles[name] = Role(keyids, threshold)
        return cls(
            version=jsonio.expect_int(obj["version"], what, "version", 1),
            expires=timeutil.parse(obj["expires"], what, "expires"),
            keys=keys,
            roles=roles,
        )
