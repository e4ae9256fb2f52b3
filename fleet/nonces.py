"""Per-device challenge nonces the service hands out, so pushed evidence can prove it is fresh.

Rules:

* a nonce is random, bound to one device, and expires (``FleetConfig.nonce_ttl``);
* it is answered at most once: the first attestation that carries it consumes it, in the
  ingest transaction, with a conditional UPDATE (so two processes cannot both consume it);
* a *different* attestation carrying a consumed nonce is a replay and fails;
* an attestation carrying a nonce we never issued to that device (or one that expired) is
  self-nonced agent evidence: it is verified, but recorded as not answering a challenge.

Used nonces are kept while a replay of them could still pass as fresh (``max_age``); unused expired
ones are dropped when the device asks for a new one, and at most ``max_open_nonces`` unused ones are kept.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, update

from fleet.config import FleetConfig
from fleet.models import Nonce as NonceRow
from fleet.models import table

T = table(NonceRow)


@dataclass(frozen=True)
class Nonce:
    device_id: str
    value: bytes
    issued_at: datetime
    expires_at: datetime

    @property
    def hex(self) -> str:
        return self.value.hex()


class NonceOutcome(enum.Enum):
    ANSWERED = "answered"  # an unexpired nonce we issued to this device, consumed now
    REPLAYED = "replayed"  # an issued nonce another attestation already answered
    EXPIRED = "expired"  # issued to this device, but answered too late: treated as self-nonced
    NOT_ISSUED = "not-issued"  # the agent's own nonce


def issue(conn: Connection, device_id: str, now: datetime, config: FleetConfig) -> Nonce:
    """A fresh nonce for ``device_id`` (call inside a write transaction)."""
    conn.execute(delete(T).where(T.c.device_id == device_id, T.c.used_at.is_(None), T.c.expires_at <= now))
    # a used nonce is kept to recognise a replay while it matters: an attestation made while the nonce
    # was live is, after max_age, refused as stale whatever nonce it carries
    conn.execute(delete(T).where(T.c.device_id == device_id, T.c.used_at.is_not(None),
                                 T.c.issued_at < now - config.max_age - config.max_clock_skew))
    open_values = conn.execute(select(T.c.value_hex).where(T.c.device_id == device_id, T.c.used_at.is_(None))
                               .order_by(T.c.issued_at.desc(), T.c.value_hex)).scalars().all()
    surplus = list(open_values[config.max_open_nonces - 1:])
    if surplus:
        conn.execute(delete(T).where(T.c.value_hex.in_(surplus)))
    nonce = Nonce(device_id, secrets.token_bytes(config.nonce_bytes), now, now + config.nonce_ttl)
    conn.execute(insert(T).values(value_hex=nonce.hex, device_id=device_id, issued_at=now,
                                   expires_at=nonce.expires_at))
    return nonce


def consume(conn: Connection, value: bytes, now: datetime, attestation_id: str, expires_at: datetime | None,
            used_at: datetime | None) -> NonceOutcome:
    """Decide what ``value`` (the predicate's nonce) is for its device, consuming it if answered.

    ``expires_at``/``used_at`` are the issued nonce's row for this device and value as read (both
    None: never issued to it); the caller read them with the device's row, in this transaction.
    """
    outcome = decide(expires_at, used_at, now)
    if outcome is not None:
        return outcome
    done = conn.execute(update(T).where(T.c.value_hex == value.hex(), T.c.used_at.is_(None))
                        .values(used_at=now, used_by=attestation_id))
    return NonceOutcome.ANSWERED if done.rowcount == 1 else NonceOutcome.REPLAYED


def decide(expires_at: datetime | None, used_at: datetime | None, now: datetime) -> NonceOutcome | None:
    """What the nonce row as read says, or None: it is live and must be consumed (conditionally)."""
    if expires_at is None:
        return NonceOutcome.NOT_ISSUED
    if used_at is not None:
        return NonceOutcome.REPLAYED
    if expires_at <= now:
        return NonceOutcome.EXPIRED
    return None


# PostgreSQL, many at once: consume each live nonce unless another transaction did first; the
# values it returns are the ones consumed here (a value not returned is a replay, as in consume)
CONSUME_MANY_PG = ("UPDATE nonces AS n SET used_at = u.at, used_by = u.att "
                   "FROM unnest(%(vals)s::text[], %(ats)s::timestamptz[], %(atts)s::text[]) AS u(v, at, att) "
                   "WHERE n.value_hex = u.v AND n.used_at IS NULL RETURNING n.value_hex")


def open_count(conn: Connection, device_id: str) -> int:
    return int(conn.execute(select(func.count()).select_from(T)
                            .where(T.c.device_id == device_id, T.c.used_at.is_(None))).scalar_one())
