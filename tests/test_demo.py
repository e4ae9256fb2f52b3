"""The README's first command keeps working: the demo on the virtual FC with swtpm, and on files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli.main import main


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


@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed (scripts/install.sh installs it)")
def test_two_demos_at_once_in_two_directories_are_both_green(tmp_path: Path) -> None:
    """Two people or two CI jobs on one machine run the README's first command at the same time, each in
    its own directory (and the files-only demo beside them): nothing may be shared between them (FC
    ports, swtpm and its state, keys, a file under /tmp), and none may write outside its directory."""
    import os
    import subprocess
    import sys

    runs: list[tuple[Path, list[str], subprocess.Popen[bytes]]] = []
    for name, extra in (("a", []), ("b", []), ("files-a", ["--files-only"]), ("files-b", ["--files-only"])):
        cwd = tmp_path / name
        for sub in ("home", "tmp"):
            (cwd / sub).mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k != "FLIGHTSEAL_SITL_BINARY"}
        env.update(HOME=str(cwd / "home"), TMPDIR=str(cwd / "tmp"), FLIGHTSEAL_GATE_KEY=str(cwd / "gate.key"))
        with open(cwd / "demo.log", "wb") as log:
            runs.append((cwd, extra, subprocess.Popen([sys.executable, "-m", "agent", "demo", *extra], cwd=cwd,
                                                      env=env, stdout=log, stderr=subprocess.STDOUT)))
    try:
        for _, _, proc in runs:
            proc.wait(timeout=300)
    finally:
        for _, _, proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    roots = set()
    for cwd, extra, proc in runs:
        out = (cwd / "demo.log").read_text()
        assert proc.returncode == 0, out
        expected = ["REFUSED: script-mismatch"] if extra else ["arm: ACCEPTED", "PASS (tpm key, TPM quote checked",
                                                               "REFUSED (Arm: FlightSeal: script-mismatch)"]
        assert all(step in out for step in expected), out
        assert sorted(p.name for p in cwd.iterdir()) == ["demo-out", "demo.log", "home", "tmp"], \
            "the demo wrote outside its --out directory"
        assert not any((cwd / "home").iterdir()) and not any((cwd / "tmp").iterdir()), "left files in HOME or TMPDIR"
        roots.add((cwd / "demo-out" / "root.json").read_bytes())
    assert len(roots) == len(runs), "two demos shared their keys"


PX4_STEPS = ("REFUSED (Arm auth: No response", "arm: ACCEPTED (PX4 asked, the agent authorized)",
             "FlightSeal: script-mismatch", "FlightSeal: pinned NAV_RCL_ACT", "FlightSeal: manifest-",
             "PASS (tpm key, TPM quote checked", "PX4 ARMED: v1.16 takes an authorization from anyone",
             "every attestation now fails: posture-gate-forgery")


@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed (scripts/install.sh installs it)")
def test_px4_demo_on_the_virtual_px4_is_green(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_PX4_SITL", raising=False)
    r = CliRunner().invoke(main, ["demo", "--fc", "px4", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "virtual PX4" in r.output
    for step in PX4_STEPS:
        assert step in r.output, r.output
    result = json.loads((tmp_path / "out" / "verification.json").read_text())
    assert result == {"passed": True, "reasons": []}


@pytest.mark.px4
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed (scripts/install.sh installs it)")
def test_px4_demo_on_px4_sitl_is_green(tmp_path: Path) -> None:
    from tests.px4_fixtures import PX4_SKIP_REASON

    if PX4_SKIP_REASON is not None:
        pytest.skip(PX4_SKIP_REASON)
    r = CliRunner().invoke(main, ["demo", "--fc", "px4", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "PX4 SITL" in r.output
    for step in PX4_STEPS:
        assert step in r.output, r.output
