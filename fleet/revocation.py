"""Signed revocations: the manufacturer (the root's ``enrollment`` role) withdraws a device.

The role that vouches a device key belongs to an airframe is the one that can take it back, with
the same threshold of distinct keys (checked by :func:`attest.dsse.verify`, exactly as
:meth:`attest.trust.TrustedState.verify_enrollment` checks an enrolment). The document travels in
a DSSE envelope of its own payload type, so no other signed document can be presented as one.
Replaying a revocation is harmless: revoking a revoked device changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from attest import dsse, jsonio, timeutil
from attest.errors import FlightSealError, FormatError
from attest.signer import Signer
from attest.trust import TrustedState

REVOCATION_PAYLOAD_TYPE = "application/vnd.flightseal.revocation+json"
REVOCATION_TYPE = "flightseal/revocation"
MAX_REVOCATION_BYTES = 16 * 1024
MAX_REASON_CHARS = 1024
_W = "revocation"


class RevocationError(FlightSealError):
    """A revocation that is well signed but cannot be accepted (dated in the future)."""


@dataclass(frozen=True)
class Revocation:
    device_id: str
    reason: str
    time: datetime

    def to_json(self) -> dict[str, Any]:
        return {"_type": REVOCATION_TYPE, "device_id": self.device_id, "reason": self.reason,
                "time": timeutil.format(self.time)}

    @classmethod
    def from_json(cls, data: Any) -> Revocation:
        o = jsonio.expect_object(data, _W, {"_type", "device_id", "reason", "time"})
        if o["_type"] != REVOCATION_TYPE:
            raise FormatError(_W, f"_type is {o['_type']!r}, expected {REVOCATION_TYPE!r}", "_type")
        return cls(jsonio.expect_str(o["device_id"], _W, "device_id", 128),
                   jsonio.expect_str(o["reason"], _W, "reason", MAX_REASON_CHARS),
                   timeutil.parse(o["time"], _W, "time"))


def sign_revocation(revocation: Revocation, signers: Sequence[Signer]) -> bytes:
    """The envelope an operator sends: each signer one of the enrolment role's keys."""
    return dsse.sign(REVOCATION_PAYLOAD_TYPE, jsonio.dumps(revocation.to_json()), signers).to_bytes()


def verify_revocation(data: bytes, trust: TrustedState, now: datetime,
                      max_skew: timedelta = timedelta(minutes=5)) -> tuple[Revocation, frozenset[str]]:
    """The revocation in ``data`` and the key ids that signed it.

    Raises FormatError (not a revocation envelope), SignatureError or ThresholdError (fewer than the
    enrolment role's threshold of its keys signed), ExpiredMetadataError (the root expired) or
    :class:`RevocationError` (dated in the future).
    """
    env = dsse.Envelope.from_bytes(data, _W, MAX_REVOCATION_BYTES)
    signers = dsse.verify(env, REVOCATION_PAYLOAD_TYPE, trust.root.role_keys("enrollment"),
                          trust.root.roles["enrollment"].threshold, _W)
    trust.check_root_fresh(now)
    revocation = Revocation.from_json(env.payload_json(_W, MAX_REVOCATION_BYTES))
    if revocation.time > now + max_skew:
        raise RevocationError(f"revocation of {revocation.device_id} is dated {timeutil.format(revocation.time)}, "
                              "in the future; check the signer's clock")
    return revocation, frozenset(signers)
