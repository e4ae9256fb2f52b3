"""Root rotation (issue 11): a new root is taken only through the root in force, never around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli.main import main
from attest.errors import RollbackError, ThresholdError
from hardware.software import SoftwareSigner
from tests.factory import World
from truststore.root_store import RootStore


def setup(tmp_path: Path) -> tuple[World, RootStore]:
    w = World()
    (tmp_path / "trust").mkdir()
    v1 = w.root_bytes()  # signatures are randomised: these bytes are "root version 1" from here on
    w.root_bytes = lambda: v1  # type: ignore[method-assign]
    (tmp_path / "trust" / "root.json").write_bytes(v1)
    store = RootStore(tmp_path / "trust" / "root.json", tmp_path / "state")
    store.load()
    store.accept()
    return w, store


def install(store: RootStore, data: bytes) -> None:
    store.installed.write_bytes(data)


def test_first_use_pins_the_installed_root_and_keeps_a_copy(tmp_path: Path) -> None:
    w, store = setup(tmp_path)
    assert store.copy_path.read_bytes() == w.root_bytes()
    assert json.loads((tmp_path / "state" / "root-state.json").read_text())["version"] == 1


def test_a_root_signed_by_the_old_and_new_keys_is_taken_and_kept(tmp_path: Path) -> None:
    w, store = setup(tmp_path)
    new = [SoftwareSigner.generate() for _ in range(3)]
    v2 = w.sign_root(w.root(version=2, keys=new), [*w.m_keys[:2], *new[:2]])
    install(store, v2)
    assert store.load().root.version == 2
    store.accept()
    assert store.copy_path.read_bytes() == v2
    assert RootStore(store.installed, store.state_dir).load().root.version == 2


def test_a_self_signed_root_of_a_higher_version_is_refused(tmp_path: Path) -> None:
    """The attack: whoever can write the root file installs their own keys. Before the fix it was taken."""
    w, store = setup(tmp_path)
    mine = [SoftwareSigner.generate() for _ in range(3)]
    install(store, w.sign_root(w.root(version=2, keys=mine), mine[:2]))
    with pytest.raises(ThresholdError, match=r"root .*root.json \(version 2\) does not follow the trusted version 1"):
        store.load()
    assert store.copy_path.read_bytes() == w.root_bytes(), "the root in force is unchanged"


def test_a_jump_needs_the_roots_in_between(tmp_path: Path) -> None:
    w, store = setup(tmp_path)
    k2 = [SoftwareSigner.generate() for _ in range(3)]
    k3 = [SoftwareSigner.generate() for _ in range(3)]
    v2 = w.sign_root(w.root(version=2, keys=k2), [*w.m_keys[:2], *k2[:2]])
    v3 = w.sign_root(w.root(version=3, keys=k3), [*k2[:2], *k3[:2]])
    install(store, v3)
    with pytest.raises(RollbackError, match=r"roots/2.root.json \(version 2\) is missing"):
        store.load()
    (store.installed.parent / "roots").mkdir()
    (store.installed.parent / "roots" / "2.root.json").write_bytes(v2)
    assert store.load().root.version == 3


def test_an_older_root_or_another_of_the_same_version_is_a_rollback(tmp_path: Path) -> None:
    w, store = setup(tmp_path)
    new = [SoftwareSigner.generate() for _ in range(3)]
    install(store, w.sign_root(w.root(version=2, keys=new), [*w.m_keys[:2], *new[:2]]))
    store.load()
    store.accept()
    install(store, w.root_bytes())
    with pytest.raises(RollbackError, match="older than version 2 in force"):
        store.load()
    install(store, w.sign_root(w.root(version=2, keys=new, expires_days=9), [*w.m_keys[:2], *new[:2]]))
    with pytest.raises(RollbackError, match="differs from the root of that version"):
        store.load()


def test_a_state_dir_without_a_copy_only_takes_the_root_it_recorded(tmp_path: Path) -> None:
    """State dirs from before copies were kept: a changed root cannot be checked, so it is refused."""
    w, store = setup(tmp_path)
    store.copy_path.unlink()
    new = [SoftwareSigner.generate() for _ in range(3)]
    install(store, w.sign_root(w.root(version=2, keys=new), [*w.m_keys[:2], *new[:2]]))
    with pytest.raises(RollbackError, match="put root version 1 back, run once"):
        store.load()
    install(store, w.root_bytes())
    store.load()
    store.accept()
    assert store.copy_path.exists()


def test_the_verifier_refuses_a_swapped_root_with_a_named_reason(tmp_path: Path) -> None:
    w, store = setup(tmp_path)
    trust = store.installed.parent
    verifier_roots = RootStore(trust / "root.json", trust)
    verifier_roots.load()
    verifier_roots.accept()  # as after a verification that passed
    mine = [SoftwareSigner.generate() for _ in range(3)]
    install(store, w.sign_root(w.root(version=5, keys=mine), mine[:2]))
    (tmp_path / "a.json").write_text("{}")
    (trust / "manifest.json").write_bytes(w.manifest_bytes())
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "a.json"), "--trust", str(trust), "--nonce", "00" * 32])
    assert result.exit_code == 1, result.output
    assert "roots/2.root.json (version 2) is missing" in result.output


def test_the_agent_refuses_to_start_on_a_root_its_root_did_not_approve(tmp_path: Path) -> None:
    from agent.daemon import Daemon
    from attest import dsse, jsonio
    from attest.root import Root
    from sim.scenarios.rig import GATE_KEY, Rig

    rig = Rig(tmp_path, "udpin:127.0.0.1:1", "udpin:127.0.0.1:2", SoftwareSigner.generate(), gate_key=GATE_KEY)
    Daemon(rig.config(), rig.device)  # first start: root version 1 is pinned in the state dir
    mine = [SoftwareSigner.generate() for _ in range(2)]
    old = Root.from_json(dsse.Envelope.from_bytes(rig.root_path.read_bytes(), "root").payload_json("root"))
    forged = Root(old.version + 1, old.expires, {k.public_key.keyid: k.public_key for k in mine}, {
        name: type(role)(tuple(k.public_key.keyid for k in mine), 2) for name, role in old.roles.items()})
    rig.root_path.write_bytes(dsse.sign(dsse.ROOT_PAYLOAD_TYPE, jsonio.dumps(forged.to_json()), mine).to_bytes())
    with pytest.raises(ThresholdError, match="does not follow the trusted version 1"):
        Daemon(rig.config(), rig.device)
