"""``flightseal bootloader``: read a board's bootloader (never write) and measure its flash CRC.

The board must be sitting in its bootloader (power it up with the serial/USB cable connected).
``measure`` prints the firmware-image measurement as JSON, ready to join the other measurements
given to ``flightseal attest``; it exits 1 when the flash does not hold the given image.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from agent.cli.options import CheckFailed
from hardware.bootloader import DEFAULT_TIMEOUT, Bootloader, measure_flash
from hardware.files import write_atomic
from hardware.firmware_image import load_image

_port = click.option("--port", required=True, help="Serial device of the board, e.g. /dev/ttyACM0.")
_baud = click.option("--baud", type=click.IntRange(1200), default=115200, show_default=True)
_timeout = click.option("--timeout", type=click.FloatRange(0.01, 30), default=DEFAULT_TIMEOUT, show_default=True,
                        help="Seconds to wait for each reply.")


@click.group("bootloader")
def bootloader() -> None:
    """Read-only checks through the FC's serial bootloader."""


@bootloader.command("info")
@_port
@_baud
@_timeout
def info(port: str, baud: int, timeout: float) -> None:
    """Print the bootloader's board id, revision, flash size, chip id and serial number."""
    with Bootloader.open(port, baud, timeout) as boot:
        board = boot.identify()
    click.echo(f"bootloader protocol {board.bl_rev}, board id {board.board_id} rev {board.board_rev}, "
               f"flash {board.flash_size} bytes")
    if board.chip_id is not None:
        click.echo(f"chip id 0x{board.chip_id:08x}")
    if board.serial:
        click.echo(f"serial {board.serial}")


@bootloader.command("measure")
@_port
@_baud
@_timeout
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The approved firmware (.apj, or .bin with --board-id).")
@click.option("--board-id", type=int, help="Board id a .bin image is for.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Write the measurement list here.")
def measure(port: str, baud: int, timeout: float, image: Path, board_id: int | None, out: Path | None) -> None:
    """Compare the board's flash CRC with IMAGE's and print the measurement (JSON list)."""
    fw = load_image(image, board_id)
    with Bootloader.open(port, baud, timeout) as boot:
        m = measure_flash(boot, fw)
    text = json.dumps([m.to_json()], indent=2) + "\n"
    if out is not None:
        write_atomic(out, text.encode())
    click.echo(text, nl=False)
    if not m.claims.get("crc_match") or "sha256" not in m.digests:
        raise CheckFailed(f"flash on {port} does not hold {image.name} (board CRC {m.claims['crc']}, "
                          f"expected {m.claims['crc_expected']}, board id {m.claims['board_id']})")


def register(group: click.Group) -> None:
    group.add_command(bootloader)
