"""`flightseal signing` on the virtual FC (which enforces signing per channel as SITL was recorded to:
every channel but SERIAL0 drops unsigned packets once it holds a key)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli.main import main
from agent.signing import KEY_FILE, PASSPHRASE_FILE, answers_unsigned, fc_signs, passphrase_key
from sim.vfc import VfcConfig, VirtualFC


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    with VirtualFC(VfcConfig(standby_delay=0.1, channels=3)) as vfc:
        yield vfc


def test_passphrase_key_is_mavproxys() -> None:
    import hashlib

    assert passphrase_key("secret") == hashlib.sha256(b"secret").digest()


def test_setup_gives_the_fc_a_key_it_enforces_and_keeps_it_on_the_companion(fc: VirtualFC, tmp_path: Path) -> None:
    assert answers_unsigned(fc.url(1)) and answers_unsigned(fc.url(2))
    r = run("signing", "setup", "--mavlink", fc.url(1), "--out", str(tmp_path / "s"), "--probe", fc.url(2))
    assert r.exit_code == 0, r.output
    key = bytes.fromhex((tmp_path / "s" / KEY_FILE).read_text().strip())
    passphrase = (tmp_path / "s" / PASSPHRASE_FILE).read_text().strip()
    assert key == passphrase_key(passphrase) == fc.signing_key
    for name in (KEY_FILE, PASSPHRASE_FILE):
        assert stat.S_IMODE((tmp_path / "s" / name).stat().st_mode) == 0o600
    assert f"unsigned probe on {fc.url(2)}: dropped" in r.output and "MAVProxy" in r.output
    assert not answers_unsigned(fc.url(1)) and not answers_unsigned(fc.url(2))
    assert fc_signs(fc.url(2), key) and not fc_signs(fc.url(2), bytes(range(32)))


def test_setup_says_serial0_is_not_enforced_and_exits_1(fc: VirtualFC, tmp_path: Path) -> None:
    r = run("signing", "setup", "--mavlink", fc.url(1), "--out", str(tmp_path / "s"), "--probe", fc.url(0))
    assert r.exit_code == 1 and f"unsigned probe on {fc.url(0)}: ANSWERED: not enforced" in r.output, r.output
    assert "SERIAL0/USB" in r.output
    assert (tmp_path / "s" / KEY_FILE).is_file(), "the key the FC holds is kept whatever the probes say"


def test_setup_never_overwrites_a_key(fc: VirtualFC, tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / KEY_FILE).write_text("keep me\n")
    r = run("signing", "setup", "--mavlink", fc.url(1), "--out", str(tmp_path / "s"))
    assert r.exit_code == 1 and "already set up" in r.output and "Traceback" not in r.output
    assert (tmp_path / "s" / KEY_FILE).read_text() == "keep me\n"
    assert fc.signing_key is None, "nothing was sent"


def test_rotate_needs_the_old_key_and_remove_switches_signing_off(fc: VirtualFC, tmp_path: Path) -> None:
    assert run("signing", "setup", "--mavlink", fc.url(1), "--out", str(tmp_path / "a")).exit_code == 0
    unsigned = run("signing", "setup", "--mavlink", fc.url(1), "--out", str(tmp_path / "x"),
                   "--heartbeat-timeout", "2")
    assert unsigned.exit_code != 0 and "signing rotate" in unsigned.output, unsigned.output
    r = run("signing", "rotate", "--mavlink", fc.url(1), "--signing-key", str(tmp_path / "a" / KEY_FILE),
            "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    new = bytes.fromhex((tmp_path / "b" / KEY_FILE).read_text().strip())
    assert fc.signing_key == new and (tmp_path / "a" / KEY_FILE).is_file()
    r = run("signing", "remove", "--mavlink", fc.url(1), "--signing-key", str(tmp_path / "b" / KEY_FILE))
    assert r.exit_code == 0, r.output
    assert fc.signing_key is None and answers_unsigned(fc.url(1))


def test_an_armed_vehicle_is_refused(fc: VirtualFC, tmp_path: Path) -> None:
    from sim.scenarios.rig import Gcs

    g = Gcs(fc.url(0))
    try:
        assert g.arm().accepted
        r = run("signing", "setup", "--mavlink", fc.url(1), "--out", str(tmp_path / "s"))
        assert r.exit_code == 1 and "armed" in r.output
    finally:
        g.disarm()
        g.close()
