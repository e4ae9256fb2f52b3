"""The import rules of docs/architecture.md, checked on every module (issue 13).

The layers run one way: ``sim/`` (rigs, the demo) → ``agent/`` (the product on the companion) →
``report/`` (the bill's writers) → ``truststore/`` (the trust state on disk) → ``hardware/`` (keys,
TPM, files) → ``attest/`` (the pure core). A module may import its own package and the ones below it, never one above.
``fleet/`` (the fleet service) stands beside ``agent/``: it may import ``attest``, ``hardware``,
``truststore`` and ``report``, never ``agent`` or ``sim``. Inside ``agent/`` the rooms run one way too:
``mavlink/`` knows no other room, ``measure/`` and ``gate/`` build on ``mavlink/``, and only
``cli/`` is the edge (nothing imports it). ``attest/`` does no I/O; that is reviewed, not parsed,
but it must at least not import a package that does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# each may import only itself and those before it
LAYERS = ["attest", "hardware", "truststore", "report", "agent", "sim"]
IO_MODULES = {"socket", "subprocess", "pymavlink", "tpm2_pytss", "pkcs11", "lupa", "click"}


def imports(path: Path, depth: int = 1) -> set[str]:
    """The modules ``path`` imports, cut to their first ``depth`` dotted parts."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):  # function-level imports count too: a late import is still an import
        if isinstance(node, ast.Import):
            out |= {".".join(alias.name.split(".")[:depth]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(".".join(node.module.split(".")[:depth]))
    return out


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_itself_and_the_layers_below(package: str) -> None:
    allowed = set(LAYERS[:LAYERS.index(package) + 1])
    above = set(LAYERS) - allowed
    bad = {str(p.relative_to(ROOT)): sorted(imports(p) & above) for p in sorted((ROOT / package).rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}, f"{package}/ imports a layer above it"


def test_the_pure_core_imports_no_io_library() -> None:
    bad = {str(p.relative_to(ROOT)): sorted(imports(p) & IO_MODULES) for p in sorted((ROOT / "attest").rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}


def test_the_demo_comes_from_the_rigs_through_the_entry_point() -> None:
    """`flightseal demo` works after install, yet the product's import graph has no sim/ in it."""
    from click.testing import CliRunner

    from agent.cli.main import main

    assert "demo" in main.commands
    assert CliRunner().invoke(main, ["demo", "--help"]).exit_code == 0


def test_the_fleet_service_never_imports_the_agent_or_the_rigs() -> None:
    bad = {str(p.relative_to(ROOT)): sorted(imports(p) & {"agent", "sim"})
           for p in sorted((ROOT / "fleet").rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}


# agent/'s rooms: what each may import of the others (its own room always).
ROOMS = {
    "agent.mavlink": set(),
    "agent.measure": {"agent.mavlink", "agent.gate"},  # gate: the pre-arm debug bit the posture reads
    "agent.gate": {"agent.mavlink"},
}


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_an_agent_room_imports_only_the_rooms_below_it(room: str) -> None:
    others = {"agent.mavlink", "agent.measure", "agent.gate", "agent.cli"} - {room} - ROOMS[room]
    folder = ROOT / room.replace(".", "/")
    bad = {str(p.relative_to(ROOT)): sorted(imports(p, 2) & others) for p in sorted(folder.rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}, f"{room} reaches into a room it must not"


def test_nothing_but_the_cli_imports_the_cli() -> None:
    edge = ("agent/cli/", "agent/__main__")
    bad = [str(p.relative_to(ROOT)) for pkg in ("agent", "attest", "hardware", "truststore", "fleet")
           for p in sorted((ROOT / pkg).rglob("*.py"))
           if "agent.cli" in imports(p, 2) and not str(p.relative_to(ROOT)).startswith(edge)]
    assert not bad


def test_each_package_lists_like_the_flow() -> None:
    """``ls agent/`` shows the rooms of a pass (issue 13), and a collector is one row of one table."""
    def rooms(package: str) -> set[str]:
        return {p.name for p in (ROOT / package).iterdir() if (p / "__init__.py").exists()}

    assert rooms("agent") == {"cli", "gate", "mavlink", "measure"}
    assert rooms("sim") == {"launchers", "scenarios", "vfc"}
    from agent.measure.collect import COLLECTORS

    assert [c.name for c in COLLECTORS] == ["identity", "scripts", "params", "image", "components", "companion",
                                            "posture"]
