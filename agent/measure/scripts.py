"""Lua scripts on the FC, read and hashed over MAVLink FTP.

ArduPilot runs every script in its scripts directory (``APM/scripts`` on a board's SD card,
``scripts`` in SITL's working directory) and those built into ROMFS (``@ROMFS/scripts``);
modules they ``require`` sit in subdirectories. All of it is measured, recursively to a bounded
depth, every file (not only ``*.lua``: a module may be loaded under any name).

Component ids are ``fc.script:<path>`` with ``path`` the file's path on the FC as MAVLink FTP
names it and as manifests list it (``scripts/flightseal.lua`` in SITL, ``APM/scripts/...`` on
a board, ``@ROMFS/scripts/...``). The bytes come through the FC's own file server, so the
strength is ``self-reported``.

Fail closed: a file that cannot be read or is too large still yields a measurement, without a
digest, so it cannot match an approved script; a directory that cannot be listed yields the
placeholder ``fc.script:*``, which no manifest approves.
"""

from __future__ import annotations

import hashlib

from agent.mavlink.ftp import FtpClient, FtpError, FtpNotFound
from agent.mavlink.ftpwire import crc32_ardupilot
from agent.measure.base import Collector, Inventory, MeasureOptions, Pass
from attest.models import ClaimValue, Kind, Measurement, Strength

PREFIX = "fc.script:"


def _walk(ftp: FtpClient, root: str, rel: str, depth: int, out: list[tuple[str, int]], opts: MeasureOptions) -> None:
    path = f"{root}/{rel}" if rel else root
    for entry in ftp.list_dir(path):
        if entry.name in (".", "..") or "/" in entry.name:
            continue
        child = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir:
            if depth < opts.max_script_depth:
                _walk(ftp, root, child, depth + 1, out, opts)
        else:
            out.append((child, entry.size))
            if len(out) > opts.max_scripts:
                raise FtpError("list", root, None, f"more than {opts.max_scripts} files")


def _failed(component: str, path: str, directory: str, error: str) -> Measurement:
    return Measurement(component, Kind.SCRIPT, {}, f"mavlink-ftp:{directory}", Strength.SELF_REPORTED,
                       {"path": path, "dir": directory, "error": error[:200]})


def list_scripts(ftp: FtpClient, directory: str, opts: MeasureOptions) -> list[str]:
    """FC paths of every file measured under ``directory`` (raises FtpNotFound when it is absent).

    Shared with the agent's change poll, so both look at exactly the same files.
    """
    files: list[tuple[str, int]] = []
    _walk(ftp, directory, "", 0, files, opts)
    return sorted(f"{directory}/{rel}" for rel, _ in files)


def _measure_dir(ftp: FtpClient, directory: str, opts: MeasureOptions, inv: Inventory, out: list[Measurement],
                 romfs: bool = False) -> bool:
    """Measure one scripts directory; False when it does not exist."""
    try:
        paths = list_scripts(ftp, directory, opts)
    except FtpNotFound:
        return False
    except FtpError as exc:
        if romfs:
            # ArduPilot answers a missing ROMFS directory with FailErrno and a stale errno (seen in
            # SITL: 0, then 23). ROMFS is inside the firmware image, which its own measurement covers.
            return False
        inv.missing(f"{PREFIX}*", f"cannot list {directory}: {exc}")
        out.append(_failed(f"{PREFIX}*", "*", directory, str(exc)))
        return True
    for path in paths:
        component = f"{PREFIX}{path}"
        try:
            data = ftp.read_file(path, opts.max_script_bytes)
        except FtpError as exc:
            inv.missing(component, str(exc))
            out.append(_failed(component, path, directory, str(exc)))
            continue
        claims: dict[str, ClaimValue] = {"path": path, "dir": directory, "size": len(data)}
        out.append(Measurement(
            component, Kind.SCRIPT,
            {"sha256": hashlib.sha256(data).hexdigest(), "crc32": f"{crc32_ardupilot(data):08x}"},
            f"mavlink-ftp:{path}", Strength.SELF_REPORTED, claims))
    return True


def collect_scripts(ftp: FtpClient, opts: MeasureOptions, inv: Inventory) -> list[Measurement]:
    out: list[Measurement] = []
    for directory in opts.scripts_dirs:
        if _measure_dir(ftp, directory, opts, inv, out):
            break
    if opts.romfs_scripts:
        _measure_dir(ftp, opts.romfs_scripts, opts, inv, out, romfs=True)
    return out


def _step(p: Pass) -> list[Measurement]:
    if p.ftp is None:  # one failing measurement, so an unlisted script never passes unseen
        return [Measurement(f"{PREFIX}*", Kind.SCRIPT, {}, "mavlink-ftp", Strength.SELF_REPORTED,
                            {"path": "*", "error": "MAVLink FTP does not answer: the scripts could not be listed"})]
    return collect_scripts(p.ftp, p.opts, p.inv)


COLLECTOR = Collector("scripts", f"{PREFIX}*", _step)
