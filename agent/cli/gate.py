"""``flightseal gate install``: put the arming gate on the FC."""

from __future__ import annotations

from pathlib import Path

import click

from agent import profiles
from agent.gate.install import install_gate
from agent.gate.install_px4 import install_px4_gate
from agent.mavlink.link import Link, LinkConfig, LinkError


@click.group("gate")
def gate() -> None:
    """The arming gate on the flight controller: the Lua gate on ArduPilot, arm authorization on PX4."""


@gate.command("install")
@click.option("--mavlink", "url", required=True, help="Link to the FC (e.g. tcp:127.0.0.1:5762, /dev/ttyACM0,115200).")
@click.option("--signing-key", "signing_key", type=click.Path(path_type=Path, dir_okay=False),
              help="MAVLink2 signing key file, if the FC has signing set up.")
@click.option("--gate-key", "gate_key", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("/var/lib/flightseal/gate.key"), show_default=True, envvar="FLIGHTSEAL_GATE_KEY",
              help="The airframe's gate key (made here, 0600, if missing; the agent's gate.key_file).")
@click.option("--seal-to", "seal_to", metavar="TPM_URI",
              help="Seal a new gate key file to this TPM (a tpm: key URI, e.g. the device key's).")
@click.option("--heartbeat-timeout", type=click.FloatRange(1, 120), default=15.0, show_default=True)
@click.option("--fc-system-id", type=click.IntRange(1, 255), default=LinkConfig.fc_system_id, show_default=True,
              help="The FC's MAVLink system id (PX4 SITL instance N: N+1).")
@click.option("--agent-system-id", type=click.IntRange(1, 255), default=LinkConfig.system_id, show_default=True,
              help="PX4: the agent's MAVLink system id (its [mavlink] system_id), whom PX4 asks before arming.")
def install(url: str, signing_key: Path | None, gate_key: Path, seal_to: str | None, heartbeat_timeout: float,
            agent_system_id: int, fc_system_id: int) -> None:
    """ArduPilot: upload the gate and its key over MAVLink FTP, enable scripting, reboot, and confirm the
    gate is blocking and holds the key (use a direct link: FTP does not encrypt the key). PX4: turn on
    its arm authorization (COM_ARM_AUTH_*) so that it asks the agent before every arming."""
    from agent.cli.measure import load_signing_key
    from agent.gate.key import ensure_gate_key

    try:
        key = load_signing_key(signing_key)
        link = Link.open(LinkConfig(url, heartbeat_timeout=heartbeat_timeout, signing_key=key,
                                    fc_system_id=fc_system_id))
    except LinkError as exc:
        raise LinkError(f"cannot reach the FC on {url}: {exc}") from None
    with link:
        profile = profiles.for_heartbeat(link.fc_heartbeat)
        click.echo(f"  FC: {profile.label}")
        if profile.gate == profiles.GATE_ARM_AUTHORIZATION:
            px4 = install_px4_gate(link, agent_system_id, lambda line: click.echo(f"  {line}"))
            click.echo(f"PX4 arm authorization on: PX4 asks system {agent_system_id} before every arming and "
                       f"refuses when nobody answers within {px4.params['COM_ARM_AUTH_TO']:g} s; the agent "
                       "checks these parameters at every pass (posture-arm-auth-off if one changes)")
            return
        secret, made = ensure_gate_key(gate_key, seal_to)
        state = ("new, sealed to the TPM" if seal_to else "new") if made else "existing"
        click.echo(f"  gate key {gate_key} ({state})")
        report = install_gate(link, secret, lambda line: click.echo(f"  {line}"))
    click.echo(f"gate v{report.version} installed at {report.path} (CRC32 {report.crc32:08x}); "
               "arming is blocked until the agent delivers a pass")


def register(group: click.Group) -> None:
    group.add_command(gate)
