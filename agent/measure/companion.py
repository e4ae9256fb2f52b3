"""The companion computer itself: the agent's installed code and configuration, and the OS.

``companion.agent``: SHA-256 over a sorted list of ``package/relative/path`` and file SHA-256 for
every file of the installed ``agent``, ``attest`` and ``hardware`` packages (bytecode caches
excluded) plus the agent's config file when given: any change to the code that takes the
measurements changes this digest. ``companion.os``: ``/etc/os-release`` and the kernel release.
Both are what the companion says about itself (``self-reported``); a TPM quote over the boot
chain is what makes them trustworthy.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

from agent import __version__
from agent.measure.base import CollectError, Collector, MeasureOptions, Pass
from attest.limits import LIMITS
from attest.models import ClaimValue, Kind, Measurement, Strength
from hardware.regular import open_regular

PACKAGES = ("agent", "attest", "hardware")
MAX_FILES = LIMITS.max_companion_files
MAX_FILE_BYTES = LIMITS.max_companion_file_bytes
OS_RELEASE = Path("/etc/os-release")


def _package_dir(name: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    size = 0
    with open_regular(path) as f:
        while block := f.read(1 << 16):
            size += len(block)
            if size > MAX_FILE_BYTES:
                raise CollectError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
            h.update(block)
    return h.hexdigest()


def package_listing(packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in packages:
        root = _package_dir(name)
        if root is None:
            continue
        for path in sorted(root.rglob("*")):
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
                continue
            out.append((f"{name}/{path.relative_to(root).as_posix()}", _file_sha(path)))
            if len(out) > MAX_FILES:
                raise CollectError(f"more than {MAX_FILES} files in the agent's packages")
    return out


def collect_companion(opts: MeasureOptions) -> list[Measurement]:
    listing = package_listing()
    claims: dict[str, ClaimValue] = {"agent_version": __version__, "files": len(listing),
                                     "python": platform.python_version()}
    if opts.companion_config is not None:
        try:
            listing.append((f"config/{opts.companion_config.name}", _file_sha(opts.companion_config)))
        except OSError as exc:
            raise CollectError(f"cannot read agent config {opts.companion_config}: {exc.strerror}") from None
        claims["config"] = str(opts.companion_config)
    text = "".join(f"{path}\0{sha}\n" for path, sha in listing)
    agent = Measurement("companion.agent", Kind.COMPANION, {"sha256": hashlib.sha256(text.encode()).hexdigest()},
                        "companion:installed-files", Strength.SELF_REPORTED, claims)
    try:
        os_release = OS_RELEASE.read_bytes()[:64 * 1024]
    except OSError:
        os_release = b""
    fields: dict[str, str] = {}
    for line in os_release.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    kernel = platform.release()
    os_claims: dict[str, ClaimValue] = {"os": fields.get("PRETTY_NAME", platform.system()),
                                        "os_id": fields.get("ID", ""), "os_version": fields.get("VERSION_ID", ""),
                                        "kernel": kernel, "machine": platform.machine()}
    os_digest = hashlib.sha256(os_release + b"\0" + kernel.encode()).hexdigest()
    osm = Measurement("companion.os", Kind.COMPANION, {"sha256": os_digest}, "companion:os-release",
                      Strength.SELF_REPORTED, os_claims)
    return [agent, osm]


def _step(p: Pass) -> list[Measurement]:
    return collect_companion(p.opts)


COLLECTOR = Collector("companion", "companion.agent", _step)
