"""The README's first command keeps working: the demo on the virtual FC with swtpm, and on files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main


@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed (scripts/install.sh installs it)")
def test_demo_on_the_virtual_fc_with_swtpm_is_green(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_SITL_BINARY", raising=False)
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    for step in ("arm: ACCEPTED", "REFUSED (Arm: FlightSeal: script-mismatch)",
                 "REFUSED (Arm: FlightSeal: pinned FS_THR_ENABLE)", "REFUSED (Arm: FlightSeal: manifest-",
                 "REFUSED (Arm: Scripting: running CRC incorrect want: 0x0",
                 "PASS (tpm key, TPM quote checked"):
        assert step in r.output, r.output
    result = json.loads((tmp_path / "out" / "verification.json").read_text())
    assert result == {"passed": True, "reasons": []}


def test_files_only_demo_is_green(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["demo", "--files-only", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "REFUSED: script-mismatch" in r.output and "REFUSED: manifest-expired" in r.output


@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed (scripts/install.sh installs it)")
def test_demo_runs_again_in_the_same_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first command is run more than once: each run starts a new airframe."""
    monkeypatch.delenv("FLIGHTSEAL_SITL_BINARY", raising=False)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        r = CliRunner().invoke(main, ["demo"])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "demo-out" / "verification.json").is_file()


def test_demo_refuses_an_out_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    r = CliRunner().invoke(main, ["demo", "--files-only", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "not made by the demo" in r.output
    assert (tmp_path / "mine.txt").read_text() == "keep me"
