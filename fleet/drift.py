"""Drift: what an airframe's newest attestation measures differently from its last passing one.

A failing verdict says *that* something is wrong; drift says *what changed* since the airframe
was last fine, which is what a security officer acts on ("the camera's firmware digest changed
on Tuesday"). Both sides are measurements from attestations whose signatures the service
verified, so the values are the device's own signed claims. Values are compared per measured
component and per digest algorithm or claim; a component that appeared or vanished is one change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attest.models import Measurement

PRESENT = "present"


@dataclass(frozen=True)
class Change:
    """One measured value that differs: ``field`` is a digest algorithm (``sha256``), a claim
    (``claims.git_hash``) or ``""`` for a whole component that appeared (old None) or vanished."""

    component: str
    field: str
    old: str | None
    new: str | None

    @property
    def name(self) -> str:
        return f"{self.component} {self.field}" if self.field else self.component

    def as_tuple(self) -> tuple[str, str | None, str | None]:
        return self.name, self.old, self.new

    def to_json(self) -> dict[str, str | None]:
        return {"component": self.component, "field": self.field, "old": self.old, "new": self.new}


def _flatten(m: Measurement) -> dict[str, str]:
    out = {alg: value for alg, value in m.digests.items()}
    out.update({f"claims.{k}": json.dumps(v) if not isinstance(v, str) else v for k, v in m.claims.items()})
    return out


def _by_component(ms: Iterable[Measurement]) -> dict[str, dict[str, str]]:
    return {m.component: _flatten(m) for m in ms}


def diff(old: Sequence[Measurement], new: Sequence[Measurement], limit: int) -> tuple[list[Change], int]:
    """The changes from ``old`` to ``new``, at most ``limit`` of them, and how many there were."""
    before, after = _by_component(old), _by_component(new)
    changes: list[Change] = []
    for component in sorted(before.keys() | after.keys()):
        if component not in before:
            changes.append(Change(component, "", None, PRESENT))
        elif component not in after:
            changes.append(Change(component, "", PRESENT, None))
        else:
            b, a = before[component], after[component]
            changes += [Change(component, f, b.get(f), a.get(f)) for f in sorted(b.keys() | a.keys())
                        if b.get(f) != a.get(f)]
    return changes[:limit], len(changes)


def dumps(changes: Sequence[Change]) -> str:
    return json.dumps([c.to_json() for c in changes], sort_keys=True)


def loads(text: str) -> list[Change]:
    return [Change(d["component"], d["field"], d["old"], d["new"]) for d in json.loads(text)]
