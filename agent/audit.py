"""The hash-chained audit log: every attestation and verdict, appended, fsync'd.

Each record is one JSON line carrying the SHA-256 of the previous record, so deleting, editing or
reordering any record breaks the chain from there on. Power loss can leave a torn last line; it is
detected and reported, earlier records stay valid, and before the next append the torn bytes are
moved to ``<log>.torn`` (nothing is thrown away) so the chain continues from the last good record.

A full disk is the same case seen from the inside (issue 11): a write that fails, or lands only in
part, is cut back off the file at once, and the log is re-checked before the next append, so a
short write can never sit in the middle of the chain. The append raises :class:`AuditError`; the
caller keeps arming blocked (nothing unaudited is delivered) and carries on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from attest import jsonio, timeutil
from attest.errors import FlightSealError, FormatError
from attest.limits import LIMITS

GENESIS = "0" * 64
MAX_RECORD_BYTES = LIMITS.max_audit_record_bytes


class AuditError(FlightSealError):
    """The audit log is broken (not merely torn at the end), or cannot be written."""


class _TailStuck(AuditError):
    """A torn tail that cannot be moved aside yet (the disk is full)."""


@dataclass(frozen=True)
class AuditReport:
    records: int
    last_hash: str
    torn_bytes: int  # bytes after the last complete record (power loss, a full disk), 0 if none
    good_length: int  # file offset just after the last good record


def _record_hash(prev: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + jsonio.dumps(body)).hexdigest()


def _lines(f: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line, complete) for each line, read one bounded line at a time (a log grows for
    years; it is never read whole). A line without its newline, or longer than any record may be,
    comes back incomplete."""
    offset = 0
    while True:
        line = f.readline(MAX_RECORD_BYTES + 2)
        if not line:
            return
        complete = line.endswith(b"\n")
        yield offset, line.rstrip(b"\n"), complete
        offset += len(line)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = jsonio.loads(line, "audit record", MAX_RECORD_BYTES)
    except FormatError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("hash"), str) else None


def scan(path: Path) -> AuditReport:
    """Check the whole chain. Raises AuditError naming the first bad record; a torn tail is reported."""
    try:
        f = open(path, "rb")  # noqa: SIM115 — closed below; a missing log is an empty one
    except FileNotFoundError:
        return AuditReport(0, GENESIS, 0, 0)
    except OSError as exc:
        raise AuditError(f"cannot read the audit log {path}: {exc.strerror}") from None
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise AuditError(f"the audit log {path} is not a regular file")
        prev, count, good = GENESIS, 0, 0
        for offset, line, complete in _lines(f):
            if not complete:
                end = f.seek(0, os.SEEK_END)
                if end > offset + len(line):  # an over-long line with more after it: not a torn tail
                    raise AuditError(f"{path}: record {count + 1} (byte {offset}) is longer than any record may be; "
                                     "the log was edited")
                return AuditReport(count, prev, end - offset, good)
            rec = _parse(line)
            if rec is None:
                raise AuditError(f"{path}: record {count + 1} (byte {offset}) is not a JSON record; the log was edited")
            body = {k: v for k, v in rec.items() if k != "hash"}
            if body.get("prev") != prev:
                raise AuditError(f"{path}: record {count + 1} does not follow record {count} (deleted or reordered)")
            if _record_hash(prev, body) != rec["hash"]:
                raise AuditError(f"{path}: record {count + 1} was altered (hash mismatch)")
            if body.get("seq") != count + 1:
                raise AuditError(f"{path}: record {count + 1} has sequence {body.get('seq')}")
            prev, count, good = rec["hash"], count + 1, offset + len(line) + 1
    return AuditReport(count, prev, 0, good)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write part of the buffer (a disk filling up); the rest goes on, or fails."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "short write")  # ENOSPC
        view = view[written:]


class AuditLog:
    """The agent's append-only, hash-chained audit log (one JSON record a line).

    Raises (from ``append``):
        AuditError: the record cannot be written whole (disk full, I/O error); the partial
            write is cut off so the chain stays intact, and the caller fails the pass."""

    def __init__(self, path: Path) -> None:
        """Check the chain (AuditError if it was edited) and set a torn tail aside; if that cannot be
        written now (a full disk), the first append tries again, so the agent still starts."""
        self.path = path
        try:
            self._recover()
        except _TailStuck:
            self._length = -1  # the next append recovers first

    def _recover(self) -> None:
        """Check the chain and set any torn tail aside: the next record follows the last good one."""
        report = scan(self.path)
        self._prev, self._seq, self._length = report.last_hash, report.records, report.good_length
        if report.torn_bytes:
            try:
                self._set_aside_torn_tail(report)
            except OSError as exc:
                raise _TailStuck(f"the audit log {self.path} ends in a torn record that cannot be set aside "
                                 f"({exc.strerror}); free disk space (arming stays blocked until it can)") from None

    def _set_aside_torn_tail(self, report: AuditReport) -> None:
        with open(self.path, "rb") as src:
            src.seek(report.good_length)
            torn = src.read()
        with open(self.path.with_name(self.path.name + ".torn"), "ab") as f:
            f.write(torn + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with open(self.path, "r+b") as f:
            f.truncate(report.good_length)
            f.flush()
            os.fsync(f.fileno())

    def append(self, kind: str, body: dict[str, Any]) -> str:
        """Append one record, fsync'd. AuditError if it is not in the log when this returns."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open the audit log {self.path}: {exc.strerror}") from None
        try:
            if self._length < 0 or os.fstat(fd).st_size != self._length:  # a failed write or a tear: set aside
                self._recover()
            record: dict[str, Any] = {"seq": self._seq + 1, "time": timeutil.format(timeutil.now()), "kind": kind,
                                      "body": body, "prev": self._prev}
            record["hash"] = _record_hash(self._prev, record)
            line = jsonio.dumps(record) + b"\n"
            if len(line) > MAX_RECORD_BYTES:
                raise AuditError(f"audit record of {len(line)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError as exc:
                # the record is not in the log: what reached the file is cut off again, so the chain
                # continues from the last good record (if even that fails, the next append sets it aside)
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._length)
                    os.fsync(fd)
                raise AuditError(f"cannot append to the audit log {self.path}: {exc.strerror or exc}; free disk "
                                 "space (arming stays blocked until records can be written)") from None
        finally:
            os.close(fd)
        self._prev, self._seq, self._length = record["hash"], self._seq + 1, self._length + len(line)
        return str(record["hash"])
