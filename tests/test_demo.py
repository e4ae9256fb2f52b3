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
                 "PASS (tpm key, TPM quote checked"):
        assert step in r.output, r.output
    result = json.loads((tmp_path / "out" / "verification.json").read_text())
    assert result == {"passed": True, "reasons": []}


def test_files_only_demo_is_green(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["demo", "--files-only", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "REFUSED: script-mismatch" in r.output and "REFUSED: manifest-expired" in r.output
