"""Reads the pages need that the store's summaries do not carry: the reason codes of listed airframes.

A list of failing airframes must show *why* each fails; :class:`fleet.store.DeviceSummary` has no
reasons, and loading a full :class:`fleet.store.DeviceView` per row would parse an envelope each.
This reads the stored reason codes of at most one page of airframes in one indexed query.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from fleet.intake import reasons_from_json
from fleet.models import Device
from fleet.store import FleetStore

MAX_IDS = 500


def reason_codes(store: FleetStore, device_ids: Sequence[str]) -> dict[str, list[str]]:
    """Device id → the codes of its current verdict's reasons (distinct, in order)."""
    ids = list(dict.fromkeys(device_ids))[:MAX_IDS]
    if not ids:
        return {}
    with store.engine.connect() as conn:
        rows = conn.execute(select(Device.device_id, Device.current_reasons).where(Device.device_id.in_(ids))).all()
    return {r.device_id: list(dict.fromkeys(x.code for x in reasons_from_json(r.current_reasons))) for r in rows}
