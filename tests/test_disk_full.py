"""Disk full (issue 11): the audit log never keeps half a record, the agent keeps running with
arming blocked, and it comes back by itself when space is freed. On a real, small tmpfs."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.audit import AuditError, AuditLog, scan
from tests.diskfull import fill, small_fs
from tests.test_agent_e2e import close, make_world


def test_a_short_write_at_disk_full_is_cut_off_and_the_chain_goes_on(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", 64) as fs:
        log = AuditLog(fs / "audit.log")
        big = {"pad": "x" * 6000}  # a record larger than the space left: the kernel writes part of it
        log.append("attestation", {"n": 0})
        filler = fill(fs, leave=4096)
        written = 1
        with pytest.raises(AuditError, match=r"No space left on device.*free disk space"):
            for _ in range(20):
                log.append("attestation", big)
                written += 1
        report = scan(fs / "audit.log")
        assert (report.records, report.torn_bytes) == (written, 0), "no part of the failed record stays"
        with pytest.raises(AuditError):  # still full: refused again, still nothing half-written
            log.append("attestation", big)
        assert scan(fs / "audit.log").torn_bytes == 0
        filler.unlink()
        log.append("attestation", {"n": "after"})
        report = scan(fs / "audit.log")
        assert (report.records, report.torn_bytes) == (written + 1, 0)
        assert AuditLog(fs / "audit.log")._seq == written + 1, "the agent starts again on this log"


def test_a_torn_tail_that_cannot_be_set_aside_yet_does_not_stop_the_agent_starting(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", 64) as fs:
        path = fs / "audit.log"
        AuditLog(path).append("attestation", {"n": 0})
        with open(path, "ab") as f:
            f.write(b'{"seq": 2, "kind": "attes')  # power lost mid-record
        filler = fill(fs)
        log = AuditLog(path)  # starts: the torn tail waits until it can be moved to audit.log.torn
        with pytest.raises(AuditError, match="torn record that cannot be set aside"):
            log.append("attestation", {"n": 1})
        filler.unlink()
        log.append("attestation", {"n": 1})
        assert scan(path).records == 2
        assert b'"kind": "attes' in (fs / "audit.log.torn").read_bytes(), "the torn bytes are kept, not lost"


def _arm(world, accepted: bool, timeout: float) -> str:  # type: ignore[no-untyped-def]
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        r = world.gcs.arm()
        last = str(r)
        if r.accepted:
            world.gcs.disarm()
        if r.accepted == accepted:
            return last
        time.sleep(0.3)
    raise AssertionError(f"arming never became {'accepted' if accepted else 'refused'}: last {last}")


def test_agent_with_a_full_disk_keeps_running_blocks_arming_and_recovers_by_itself(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", 1024) as fs:
        world = make_world(tmp_path / "rig")
        try:
            cfg = world.rig.config()
            (fs / "state").mkdir()
            (fs / "state" / "gate.key").write_bytes((Path(cfg.trust.state_dir) / "gate.key").read_bytes())
            (fs / "state" / "gate.key").chmod(0o600)
            cfg = replace(cfg, trust=replace(cfg.trust, state_dir=str(fs / "state")),
                          audit=replace(cfg.audit, path=str(fs / "state" / "audit.log")))
            daemon = world.rig.start_agent(cfg)
            world.rig.wait_verdict(passed=True)
            _arm(world, True, 10)
            filler = fill(fs)
            deadline = time.monotonic() + 30
            while "No space left on device" not in daemon.status.audit_error and time.monotonic() < deadline:
                # the manifest file "changed": a new pass. The log's last page may hold a record or two more
                os.utime(world.rig.manifest_path)
                time.sleep(1.5)
            passes = daemon.status.passes
            assert "No space left on device" in daemon.status.audit_error, daemon.status.transitions[-5:]
            refused = _arm(world, False, 5)
            assert "FlightSeal" in refused, refused
            assert world.rig._thread is not None and world.rig._thread.is_alive(), "the daemon keeps running"
            filler.unlink()
            world.rig.wait_verdict(passes=passes + 1, passed=True, timeout=20)
            _arm(world, True, 10)
            assert daemon.status.audit_error == ""
            report = scan(fs / "state" / "audit.log")
            assert report.torn_bytes == 0 and report.records >= passes + 1
        finally:
            close(world)
