"""The import rules of docs/architecture.md, checked on every module (issue 13).

The layers run one way: ``sim/`` (rigs, the demo) → ``agent/`` (the product on the companion) →
``hardware/`` (keys, TPM, files) → ``attest/`` (the pure core). A module may import its own
package and the ones below it, never one above. ``attest/`` does no I/O; that is reviewed, not
parsed, but it must at least not import a package that does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["attest", "hardware", "truststore", "agent", "sim"]  # each may import only itself and those before it
IO_MODULES = {"socket", "subprocess", "pymavlink", "tpm2_pytss", "pkcs11", "lupa", "click"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):  # function-level imports count too: a late import is still an import
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
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
