"""The hash-chained audit log: every attestation and verdict, appended, fsync'd.

Each record is one JSON line carrying the SHA-256 of the previous record, so deleting, editing or
reordering any record breaks the chain from there on. Power loss can leave a torn last line; it is
detected and reported, earlier records stay valid, and before the next append the torn bytes are
moved to ``<log>.torn`` (nothing is thrown away) so the chain continues from the last good record.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attest import jsonio, timeutil
from attest.errors import FlightSealError

GENESIS = "0" * 64
MAX_RECORD_BYTES = 1024 * 1024


class AuditError(FlightSealError):
    """The audit log is broken (not merely torn at the end)."""


@dataclass(frozen=True)
class AuditReport:
    records: int
    last_hash: str
    torn_bytes: int  # bytes after the last complete record (power loss), 0 if none
    good_length: int  # file offset just after the last good record


def _record_hash(prev: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + jsonio.dumps(body)).hexdigest()


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line, complete) for each line; the last may lack its newline."""
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end == -1:
            yield offset, data[offset:], False
            return
        yield offset, data[offset:end], True
        offset = end + 1


def scan(path: Path) -> AuditReport:
    """Check the whole chain. Raises AuditError naming the first bad record; a torn tail is reported."""
    data = path.read_bytes() if path.exists() else b""
    prev, count, good = GENESIS, 0, 0
    for offset, line, complete in _lines(data):
        try:
            rec = json.loads(line)
            body = {k: v for k, v in rec.items() if k != "hash"}
            ok_shape = isinstance(rec, dict) and isinstance(rec.get("hash"), str)
        except (ValueError, AttributeError):
            ok_shape = False
        if not ok_shape or not complete:
            if not complete:
                return AuditReport(count, prev, len(data) - offset, good)
            raise AuditError(f"{path}: record {count + 1} (byte {offset}) is not a JSON record; the log was edited")
        if body.get("prev") != prev:
            raise AuditError(f"{path}: record {count + 1} does not follow record {count} (deleted or reordered)")
        if _record_hash(prev, body) != rec["hash"]:
            raise AuditError(f"{path}: record {count + 1} was altered (hash mismatch)")
        if body.get("seq") != count + 1:
            raise AuditError(f"{path}: record {count + 1} has sequence {body.get('seq')}")
        prev, count, good = rec["hash"], count + 1, offset + len(line) + 1
    return AuditReport(count, prev, 0, good)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        report = scan(path)
        if report.torn_bytes:
            self._set_aside_torn_tail(report)
        self._prev = report.last_hash
        self._seq = report.records

    def _set_aside_torn_tail(self, report: AuditReport) -> None:
        data = self.path.read_bytes()
        with open(self.path.with_name(self.path.name + ".torn"), "ab") as f:
            f.write(data[report.good_length:] + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with open(self.path, "r+b") as f:
            f.truncate(report.good_length)
            f.flush()
            os.fsync(f.fileno())

    def append(self, kind: str, body: dict[str, Any]) -> str:
        record: dict[str, Any] = {"seq": self._seq + 1, "time": timeutil.format(timeutil.now()), "kind": kind,
                                  "body": body, "prev": self._prev}
        record["hash"] = _record_hash(self._prev, record)
        line = jsonio.dumps(record) + b"\n"
        if len(line) > MAX_RECORD_BYTES:
            raise AuditError(f"audit record of {len(line)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._prev, self._seq = record["hash"], self._seq + 1
        return str(record["hash"])
