"""The audit log: a hash chain that shows edits, deletions, reordering and power-loss tears."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.audit import AuditError, AuditLog, scan
from agent.cli.main import main


def filled(tmp_path: Path, n: int = 5) -> Path:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(n):
        log.append("verdict", {"passed": i % 2 == 0, "i": i})
    return log.path


def test_appended_records_chain_and_survive_reopen(tmp_path: Path) -> None:
    path = filled(tmp_path)
    AuditLog(path).append("attestation", {"x": 1})
    assert scan(path).records == 6


def test_edited_record_is_detected(tmp_path: Path) -> None:
    path = filled(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[2])
    rec["body"]["passed"] = not rec["body"]["passed"]
    lines[2] = json.dumps(rec).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match="record 3 was altered"):
        scan(path)


def test_deleted_record_is_detected(tmp_path: Path) -> None:
    path = filled(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    with pytest.raises(AuditError, match="does not follow"):
        scan(path)


def test_torn_last_record_is_reported_and_earlier_records_stay_valid(tmp_path: Path) -> None:
    path = filled(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # power lost mid-write of record 5
    report = scan(path)
    assert report.records == 4
    assert report.torn_bytes > 0
    r = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert r.exit_code == 1 and "torn last record" in r.output


def test_torn_tail_is_set_aside_not_lost_and_chain_continues(tmp_path: Path) -> None:
    path = filled(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    log = AuditLog(path)
    log.append("verdict", {"after": "restart"})
    assert scan(path).records == 5 and scan(path).torn_bytes == 0
    torn = (tmp_path / "audit.log.torn").read_bytes()
    assert torn.strip() and torn.strip() in data


def test_audit_verify_cli_exit_codes(tmp_path: Path) -> None:
    path = filled(tmp_path)
    assert CliRunner().invoke(main, ["audit", "verify", str(path)]).exit_code == 0
    path.write_bytes(path.read_bytes().replace(b'"i":1', b'"i":7'))
    r = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert r.exit_code == 1 and "altered" in r.output


def test_a_deeply_nested_or_over_long_line_is_named_not_a_traceback(tmp_path: Path) -> None:
    path = filled(tmp_path, 2)
    good = path.read_bytes()
    path.write_bytes(good + b"[" * 200_000 + b"\n")
    with pytest.raises(AuditError, match=r"record 3 .* is not a JSON record"):
        scan(path)
    path.write_bytes(good + b"x" * (3 * 1024 * 1024) + b"\n" + good)
    with pytest.raises(AuditError, match=r"record 3 .* longer than any record"):
        scan(path)
