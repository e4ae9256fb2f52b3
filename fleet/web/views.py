"""How the store's values are shown: JSON for the API, and the filters the page templates use.

One module for both, so the API and the pages name a state, a time or a reason the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2

from attest import timeutil
from fleet.drift import Change
from fleet.intake import FleetReason
from fleet.store import DeviceSummary, DeviceView, IngestResult, State

STATE_LABELS = {
    State.PASSING: "passing", State.FAILING: "failing", State.DRIFTED: "drifted", State.STALE: "stale",
    State.REVOKED: "revoked", State.NEVER_PASSED: "never passed",
}
RED_STATES = frozenset({State.FAILING, State.DRIFTED, State.NEVER_PASSED})


def rfc3339(value: datetime | None) -> str | None:
    return None if value is None else timeutil.format(value)


def reason_json(r: FleetReason) -> dict[str, str]:
    return {"code": str(r.code), "detail": r.detail, **({"component": r.component} if r.component else {})}


def ingest_json(result: IngestResult) -> dict[str, Any]:
    return {"id": result.attestation_id, "device": result.device_id, "passed": result.passed,
            "duplicate": result.duplicate, "answered_nonce": result.answered_nonce,
            "reasons": [reason_json(r) for r in result.reasons]}


def summary_json(d: DeviceSummary) -> dict[str, Any]:
    return {"device": d.device_id, "airframe": d.airframe, "state": d.state.value,
            "last_attempt": rfc3339(d.last_attempt_at), "last_success": rfc3339(d.last_success_at),
            "consecutive_failures": d.consecutive_failures}


def change_json(c: Change) -> dict[str, str | None]:
    return {"component": c.name, "old": c.old, "new": c.new}


def device_json(v: DeviceView) -> dict[str, Any]:
    return {
        "device": v.device_id, "airframe": v.airframe, "state": v.state.value, "passed": v.passed,
        "reasons": [reason_json(r) for r in v.reasons], "drift": [change_json(c) for c in v.drift],
        "last_attempt": rfc3339(v.last_attempt_at), "last_received": rfc3339(v.last_received_at),
        "last_success": rfc3339(v.last_success_at), "consecutive_failures": v.consecutive_failures,
        "seconds_since_last_attestation": None if v.since_last_attestation is None
        else int(v.since_last_attestation.total_seconds()),
        "manifest_version": v.manifest_version, "trust_manifest_version": v.trust_manifest_version,
        "current_attestation": v.current_attestation_id,
        "revoked": {"at": rfc3339(v.revoked_at), "by": v.revoked_by, "reason": v.revoked_reason} if v.revoked else None,
        "parts": [{"name": p.name, "vendor": p.vendor, "model": p.model, "origin": p.origin, "selector": p.selector}
                  for p in v.parts],
    }


def when(value: datetime | None) -> str:
    """A time as an officer reads it: UTC, to the second."""
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: timedelta | datetime | None) -> str:
    """How long ago, in the largest unit that fits ("3 d 4 h", "12 min")."""
    if value is None:
        return "never"
    span = datetime.now(UTC) - value if isinstance(value, datetime) else value
    seconds = int(span.total_seconds())
    if seconds < 0:
        return "in the future"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h ago"
    if hours:
        return f"{hours} h {minutes} min ago"
    return f"{minutes} min ago" if minutes else f"{seconds} s ago"


def state_label(state: State) -> str:
    return STATE_LABELS.get(state, str(state))


def state_class(state: State) -> str:
    """The CSS class: red for a failing verdict of any kind."""
    return "fail" if state in RED_STATES else {State.PASSING: "pass", State.STALE: "stale",
                                                 State.REVOKED: "revoked"}.get(state, "never")


def short(value: object, keep: int = 16) -> str:
    """A long digest or claim cut for a table cell (the page puts the whole value in a tooltip)."""
    text = str(value)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def install_filters(env: jinja2.Environment) -> None:
    env.filters.update(when=when, ago=ago, state_label=state_label, state_class=state_class, short=short)
    env.globals.update(State=State)
