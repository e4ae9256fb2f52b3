"""The service's bounds and policy in one frozen value (python-tuf's ``config.py`` habit).

Why these defaults:

* ``max_age`` is 30 days, not the offline verifier's 5 minutes: agents queue evidence while
  offline and push it later, so an hours-old attestation is normal. Its time is recorded, and only
  the newest one by attestation time decides an airframe's current state (:mod:`fleet.store`).
* ``stale_after`` (7 days): an airframe that has not attested for that long is listed as stale
  and a webhook says so once per episode.
* ``nonce_ttl`` (10 minutes) is long enough for a pre-flight check, short enough that a
  captured nonce is of little use; ``max_open_nonces`` bounds what one device can make us keep.
* ``trust_recheck`` (1 s): how often the trust directory's files are re-stat'ed for changes;
  between checks the parsed root, enrolments and manifest are reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from attest.limits import LIMITS


@dataclass(frozen=True)
class FleetConfig:
    max_age: timedelta = timedelta(days=30)
    max_clock_skew: timedelta = timedelta(minutes=5)
    stale_after: timedelta = timedelta(days=7)
    nonce_ttl: timedelta = timedelta(minutes=10)
    nonce_bytes: int = 32
    max_open_nonces: int = 16  # unused nonces kept per device; issuing more drops the oldest
    allow_software_keys: bool = False
    require_quote: bool = False
    trust_recheck_s: float = 1.0
    max_envelope_bytes: int = LIMITS.max_envelope_bytes
    max_drift_changes: int = 256  # changes kept per airframe; more are counted, not listed
    history_page_max: int = 1000
    search_max: int = 500
