"""``flightseal signing setup|rotate|remove``: MAVLink2 signing on the FC, proven enforced (agent/signing.py)."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.options import CheckFailed
from agent.mavlink.link import Link, LinkConfig, LinkError
from agent.signing import (
    KEY_FILE,
    PASSPHRASE_FILE,
    SigningError,
    SigningSecret,
    answers_unsigned,
    fc_signs,
    save_secret,
    send_key,
)

URL_HELP = "The FC port this computer uses (the agent's: e.g. /dev/ttyAMA0,921600 or tcp:127.0.0.1:5762)."
PROBE_HELP = "Another FC port to check with an unsigned probe (e.g. the telemetry radio's); repeatable."


def _open(url: str, key: bytes | None, timeout: float) -> Link:
    try:
        return Link.open(LinkConfig(url, heartbeat_timeout=timeout, signing_key=key))
    except LinkError as exc:
        hint = (" (is the key the FC holds?)" if key
                else " (does the FC already require a signing key? then `signing rotate --signing-key`)")
        raise LinkError(f"cannot reach the FC on {url}: {exc}{hint}") from None


def _confirm_enforced(url: str, key: bytes, probes: tuple[str, ...], out: Path) -> None:
    if not fc_signs(url, key):
        raise SigningError(f"the FC on {url} does not sign with the new key: it did not take it (armed? an old "
                           f"firmware without signing?); the unused key in {out} can be deleted")
    click.echo(f"  the FC signs what it sends on {url}")
    open_ports = [u for u in (url, *probes) if answers_unsigned(u)]
    for u in (url, *probes):
        click.echo(f"  unsigned probe on {u}: {'ANSWERED: not enforced' if u in open_ports else 'dropped'}")
    if open_ports:
        raise CheckFailed(f"signing is set, but {', '.join(open_ports)} still accept unsigned packets (ArduPilot "
                          "never checks SERIAL0/USB: keep it unconnected in the field)")


def _export(directory: Path, url: str) -> None:
    key, passphrase = directory / KEY_FILE, directory / PASSPHRASE_FILE
    click.echo(f"signing key in {key} (0600), passphrase in {passphrase} (0600). Next:")
    click.echo(f"  agent: agent.toml [mavlink] signing_key_file = \"{key.resolve()}\"; gate install, challenge: "
               f"--signing-key {key}")
    click.echo("  MAVProxy: `signing key PASSPHRASE`, or a line `DEVICE PASSPHRASE` in ~/.mavproxy/signing.keys "
               f"(DEVICE as in --master, e.g. {url})")
    click.echo("  Mission Planner and QGroundControl: enter the passphrase in their MAVLink signing settings "
               "(they hash it with SHA-256 the same way)")


SEAL_HELP = ("Seal the key file to this TPM (a tpm: key URI, e.g. the device key's): a copy of the file is "
             "useless elsewhere.")


@click.group("signing")
def signing() -> None:
    """MAVLink2 signing between the FC, the agent and the operators' ground stations."""


@signing.command("setup")
@click.option("--mavlink", "url", required=True, help=URL_HELP)
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), default=Path("signing"),
              show_default=True, help="Where to keep the key and passphrase (never overwritten).")
@click.option("--probe", "probes", multiple=True, help=PROBE_HELP)
@click.option("--seal-to", "seal_to", metavar="TPM_URI", help=SEAL_HELP)
@click.option("--heartbeat-timeout", type=click.FloatRange(1, 120), default=10.0, show_default=True)
def setup(url: str, out: Path, probes: tuple[str, ...], seal_to: str | None, heartbeat_timeout: float) -> None:
    """Make a key, give it to the FC (disarmed), and prove it is enforced. Exit 1 if a port stays open."""
    _install(url, out, probes, None, heartbeat_timeout, seal_to)


@signing.command("rotate")
@click.option("--mavlink", "url", required=True, help=URL_HELP)
@click.option("--signing-key", "old", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The key the FC holds now.")
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Where to keep the new key (not where the old one is).")
@click.option("--probe", "probes", multiple=True, help=PROBE_HELP)
@click.option("--seal-to", "seal_to", metavar="TPM_URI", help=SEAL_HELP)
@click.option("--heartbeat-timeout", type=click.FloatRange(1, 120), default=10.0, show_default=True)
def rotate(url: str, old: Path, out: Path, probes: tuple[str, ...], seal_to: str | None,
           heartbeat_timeout: float) -> None:
    """Replace the FC's key with a new one, sent signed with the old one; the old file is kept."""
    from agent.cli.measure import load_signing_key

    _install(url, out, probes, load_signing_key(old), heartbeat_timeout, seal_to)


@signing.command("remove")
@click.option("--mavlink", "url", required=True, help=URL_HELP)
@click.option("--signing-key", "key_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The key the FC holds now.")
@click.option("--heartbeat-timeout", type=click.FloatRange(1, 120), default=10.0, show_default=True)
def remove(url: str, key_path: Path, heartbeat_timeout: float) -> None:
    """Switch signing off on the FC (every link then accepts unsigned packets again)."""
    from agent.cli.measure import load_signing_key

    with _open(url, load_signing_key(key_path), heartbeat_timeout) as link:
        send_key(link, bytes(32))
    if not answers_unsigned(url):
        raise SigningError(f"the FC on {url} still drops unsigned packets: it did not take the removal")
    click.echo(f"signing removed: the FC answers unsigned packets on {url}; the agent, gate install and challenge "
               "must no longer be given the key")


def _install(url: str, out: Path, probes: tuple[str, ...], old_key: bytes | None, timeout: float,
             seal_to: str | None) -> None:
    secret = SigningSecret.generate()
    with _open(url, old_key, timeout) as link:
        if old_key is None and link.fc_heartbeat is not None and link.fc_heartbeat.get_header().incompat_flags & 1:
            raise SigningError(f"the FC on {url} already signs its packets: it holds a key, which only a signed "
                               "SETUP_SIGNING can replace; use `flightseal signing rotate --signing-key CURRENT`")
        save_secret(out, secret, seal_to)  # before the FC has it: a key the FC holds is never lost
        send_key(link, secret.key)
    click.echo(f"sent a new signing key to the FC on {url}")
    _confirm_enforced(url, secret.key, probes, out)
    _export(out, url)
    if seal_to is not None:
        click.echo(f"  the key file is sealed to the TPM ({seal_to}); the passphrase file is for the ground "
                   f"stations: copy it to them, then delete {out / PASSPHRASE_FILE} from the companion")


def register(group: click.Group) -> None:
    group.add_command(signing)
