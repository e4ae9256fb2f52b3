"""``flightseal challenge``: the operator asks the drone for a fresh attestation over MAVLink."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click

from agent.challenge import ChallengeError, request_attestation
from hardware.files import write_atomic


@click.command("challenge")
@click.option("--mavlink", "url", required=True,
              help="Link to the vehicle, e.g. udpin:127.0.0.1:14550, tcp:127.0.0.1:5760, /dev/ttyUSB0,57600.")
@click.option("--nonce", "nonce_hex", help="Challenge nonce (hex); default: a fresh random one.")
@click.option("--target", default="1/191", show_default=True, help="Agent's system/component id.")
@click.option("--source", default="255/190", show_default=True, help="This ground station's system/component id.")
@click.option("--timeout", type=click.FloatRange(1, 600), default=60.0, show_default=True, help="Seconds.")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--signing-key", "signing_key", type=click.Path(path_type=Path, dir_okay=False),
              help="MAVLink2 signing key file (`flightseal signing setup`), when the link is signed.")
def challenge(url: str, nonce_hex: str | None, target: str, source: str, timeout: float, out: Path,
              signing_key: Path | None) -> None:
    """Send a nonce, receive the attestation, write it. Verify it with `flightseal verify`."""
    from pymavlink import mavutil

    from agent.cli.verify import parse_nonce

    os.environ.setdefault("MAVLINK20", "1")
    nonce = parse_nonce(nonce_hex) if nonce_hex else secrets.token_bytes(32)
    try:
        t_sys, t_comp = (int(x) for x in target.split("/"))
        s_sys, s_comp = (int(x) for x in source.split("/"))
    except ValueError:
        raise click.BadParameter("use SYSTEM/COMPONENT, e.g. 1/191") from None
    try:
        conn = mavutil.mavlink_connection(url, source_system=s_sys, source_component=s_comp, autoreconnect=False)
    except Exception as exc:  # pymavlink raises bare OSError/SerialException/ValueError for bad URLs
        raise ChallengeError(f"cannot open MAVLink link {url!r}: {exc}") from None
    if signing_key is not None:
        from agent.cli.measure import load_signing_key

        conn.setup_signing(load_signing_key(signing_key), sign_outgoing=True)
    try:
        conn.mav.heartbeat_send(6, 8, 0, 0, 4)  # MAV_TYPE_GCS, MAV_AUTOPILOT_INVALID, active
        data = request_attestation(conn, nonce, target_system=t_sys, target_component=t_comp, timeout=timeout)
    finally:
        conn.close()
    write_atomic(out, data)
    click.echo(f"wrote attestation ({len(data)} bytes) to {out}")
    click.echo(f"nonce: {nonce.hex()}")
    click.echo(f"verify: flightseal verify {out} --trust TRUST_DIR --nonce {nonce.hex()}")


def register(group: click.Group) -> None:
    group.add_command(challenge)
