"""``flightseal measure``: what is on the airframe, measured over MAVLink.

Prints the inventory as a table (or, with ``--json``, the list of measurements that
``flightseal attest --measurements FILE`` reads). Exit 0 when everything was measured, 1 when
something could not be (each printed as ``MISSING``), 2 for a usage error or an unreachable FC.

The link and measurement options are shared with ``flightseal attest --mavlink``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent.cli.options import CheckFailed
from agent.mavlink.link import Link, LinkConfig
from agent.measure import ImageCache, Inventory, MeasureOptions, measure
from attest import dsse
from attest.errors import FormatError
from attest.limits import LIMITS
from attest.manifest import Manifest, ParamPolicy
from hardware.files import read_bounded

SIGNING_KEY_BYTES = 32


def mavlink_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say how to reach and measure the FC (``measure`` and ``attest``)."""
    options = [
        click.option("--system-id", type=click.IntRange(1, 255), default=LinkConfig.system_id,
                     show_default=True,
                     help="The agent's MAVLink system id (the vehicle's, for a companion)."),
        click.option("--component-id", type=click.IntRange(1, 255), default=LinkConfig.component_id,
                     show_default=True,
                     help="The agent's MAVLink component id (191 = onboard computer)."),
        click.option("--fc-system-id", type=click.IntRange(1, 255), default=LinkConfig.fc_system_id,
                     show_default=True,
                     help="The FC's MAVLink system id (PX4 SITL instance N: N+1)."),
        click.option("--heartbeat-timeout", type=click.FloatRange(0.5, 120), default=LinkConfig.heartbeat_timeout,
                     show_default=True,
                     help="Seconds to wait for the FC's HEARTBEAT."),
        click.option("--signing-key", "signing_key_path", type=click.Path(path_type=Path, dir_okay=False),
                     help="MAVLink2 signing key: 32 raw bytes or 64 hex digits."),
        click.option("--param-source", type=click.Choice(["auto", "ftp", "mavlink"]), default="auto",
                     show_default=True, help="auto: @PARAM/param.pck over FTP, else the PARAM protocol."),
        click.option("--no-flash-read", is_flag=True, help="Do not read @SYS/flash.bin (slow on a serial link)."),
        click.option("--firmware-file", type=click.Path(path_type=Path, dir_okay=False),
                     help="Companion-side copy of the FC image (default in SITL: $FLIGHTSEAL_SITL_BINARY)."),
        click.option("--image-cache", type=click.Path(path_type=Path, dir_okay=False),
                     help="File that remembers the last full flash read, so the next run checks a CRC32."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_signing_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    from agent.keyfiles import read_key_file

    raw, sealed = read_key_file(path, "signing key")
    text = raw.strip()
    if len(raw) == SIGNING_KEY_BYTES:
        return raw
    if sealed:
        raise FormatError(f"signing key {path}", f"sealed {len(raw)} bytes, not {SIGNING_KEY_BYTES}")
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != SIGNING_KEY_BYTES:
        raise FormatError(f"signing key {path}", "must be 32 raw bytes or 64 hex digits")
    return key


def unverified_param_policy(path: Path) -> ParamPolicy:
    """The manifest's parameter policy, read without verifying signatures.

    ``measure`` only uses it to choose what to report (exclusions and pinned names); the
    appraisal, which decides, always runs against a verified manifest.
    """
    env = dsse.Envelope.from_bytes(read_bounded(path, "manifest", LIMITS.max_manifest_bytes), "manifest",
                                   LIMITS.max_manifest_bytes)
    return Manifest.from_json(env.payload_json("manifest", LIMITS.max_manifest_bytes)).params


def _progress() -> Callable[[str, int, int | None], None]:
    start = time.monotonic()
    last = [0.0]

    def show(what: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5:
            return
        last[0] = now
        rate = done / max(now - start, 1e-6) / 1000
        of = f" of {total}" if total else ""
        click.echo(f"\r  reading {what}: {done}{of} bytes ({rate:.1f} kB/s)", err=True, nl=False)

    return show


def run_measure(url: str, *, policy: ParamPolicy | None, all_params: bool, system_id: int, component_id: int,
                fc_system_id: int, heartbeat_timeout: float, signing_key_path: Path | None, param_source: str,
                no_flash_read: bool, firmware_file: Path | None, image_cache: Path | None) -> Inventory:
    """Open the link, run one pass, close. Shared by ``measure`` and ``attest --mavlink``.

    ``all_params`` claims every parameter value (an inventory to baseline and pin from); otherwise
    only the pinned ones and those that differ from the approved set are named.
    """
    opts = MeasureOptions(param_source=param_source, flash_read=not no_flash_read, firmware_file=firmware_file,
                          param_claims="all" if all_params else "differences",
                          progress=_progress() if sys.stderr.isatty() else None).for_params(policy or ParamPolicy())
    config = LinkConfig(url, system_id=system_id, component_id=component_id, fc_system_id=fc_system_id,
                        heartbeat_timeout=heartbeat_timeout, signing_key=load_signing_key(signing_key_path))
    cache = ImageCache(image_cache) if image_cache is not None else None
    with Link.open(config) as link:  # a LinkError is exit 2 through the CLI's map
        return measure(link, opts, cache)


def _short(m: dict[str, Any]) -> str:
    claims = m["claims"]
    keys = ("version", "git_hash", "board_id", "uid", "path", "count", "method", "type", "model", "vendor",
            "hardware_id", "sw_version", "vcs_commit", "size", "os", "agent_version", "signed", "script_checksums",
            "gate_stopped", "mavlink_serials", "link")
    return " ".join(f"{k}={claims[k]}" for k in keys if k in claims and claims[k] != "")[:160]


def print_table(inv: Inventory) -> None:
    rows = [m.to_json() for m in inv.measurements]
    width = max([len(r["component"]) for r in rows] + [9])
    click.echo(f"{'component':<{width}}  {'kind':<14}  {'digest':<16}  {'strength':<20}  source / claims")
    for r in rows:
        # a SHA-256 prefix, else a DroneCAN part's whole image CRC (what --firmware-crc64 takes)
        sha = r["digests"].get("sha256", "")[:16] or r["digests"].get("crc64", "-")
        click.echo(f"{r['component']:<{width}}  {r['kind']:<14}  {sha:<16}  {r['strength']:<20}  {r['source']}")
        detail = _short(r)
        if detail:
            click.echo(f"{'':<{width}}  {'':<14}  {'':<16}  {'':<20}  {detail}")
    for p in inv.problems:
        click.echo(f"MISSING {p.component}: {p.detail}")


@click.command("measure")
@click.option("--mavlink", "url", required=True,
              help="Link to the FC: /dev/ttyAMA0,921600, tcp:127.0.0.1:5762 (SITL SERIAL1), udpin:0.0.0.0:14550.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON (for `attest --measurements`).")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Take parameter exclusions and pinned names from this manifest (read, not verified).")
@mavlink_options
def measure_cmd(url: str, as_json: bool, manifest_path: Path | None, **kw: Any) -> None:
    """Measure firmware, scripts, parameters, bus components and the companion over MAVLink (ArduPilot or
    PX4, told apart by the FC's HEARTBEAT)."""
    policy = unverified_param_policy(manifest_path) if manifest_path is not None else None
    start = time.monotonic()
    inv = run_measure(url, policy=policy, all_params=True, **kw)
    if sys.stderr.isatty():
        click.echo("\r", err=True, nl=False)
    if as_json:
        click.echo(json.dumps(inv.to_json(), indent=2, sort_keys=True))
        for p in inv.problems:
            click.echo(f"MISSING {p.component}: {p.detail}", err=True)
    else:
        print_table(inv)
        click.echo(f"{len(inv.measurements)} measurements in {time.monotonic() - start:.2f} s")
    if inv.problems:
        raise CheckFailed(f"{len(inv.problems)} item(s) could not be measured")


def register(group: click.Group) -> None:
    group.add_command(measure_cmd)
