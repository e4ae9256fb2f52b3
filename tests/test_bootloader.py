"""The read-only bootloader client against an emulated ArduPilot bootloader on a pseudo-terminal."""

from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.appraise import appraise
from attest.errors import FormatError
from attest.models import Code, Kind, Strength
from hardware.bootloader import READ_ONLY, Bootloader, BootloaderError, measure_flash
from hardware.firmware_image import FirmwareImage, ap_crc32, load_apj, load_image
from sim.vfc.bootloader import BootloaderEmulator, bl_crc32
from tests.factory import FW_IMAGE, World, measurements

FLASH = 64 * 1024
BOARD = 9


def apj(image: bytes, board_id: int = BOARD, **extra: object) -> bytes:
    desc: dict[str, object] = {"board_id": board_id, "magic": "APJFWv1", "image_size": len(image),
                               "image": base64.b64encode(zlib.compress(image, 9)).decode()}
    desc.update(extra)
    return json.dumps(desc).encode()


def as_uploader_py_programs(image: bytes) -> bytes:
    """What ArduPilot's uploader.py writes to flash: ``image += bytes(0xFF)`` until 4-aligned."""
    while len(image) % 4:
        image += bytes(255)
    return image


# Known answers computed with firmware.crc() of ArduPilot's Tools/scripts/uploader.py (4.7.0-dev).
KAT_ALIGNED = bytes(range(256)) * 16
KAT_UNALIGNED = KAT_ALIGNED + b"\x01\x02\x03"


@pytest.mark.parametrize("image,flash,crc", [(KAT_ALIGNED, 65536, 0xBE58FF20), (KAT_ALIGNED, 2 << 20, 0x01510A3B),
                                             (KAT_UNALIGNED, 65536, 0xC9422A87), (KAT_UNALIGNED, 2 << 20, 0xFEB25A09)])
def test_expected_crc_matches_ardupilot_uploader(image: bytes, flash: int, crc: int) -> None:
    crcs = load_apj(apj(image)).expected_crcs(flash)
    assert crc in crcs.values()
    if len(image) % 4:
        assert crcs["uploader-py"] == crc and crcs["erased-ff"] != crc


@settings(max_examples=50)
@given(st.binary(max_size=600), st.integers(0, 2**32 - 1))
def test_client_crc_and_emulator_crc_are_the_same_function(data: bytes, state: int) -> None:
    assert ap_crc32(data, state) == bl_crc32(data, state)


def test_identify_reads_the_board(tmp_path: Path) -> None:
    serial = bytes.fromhex("0102030405060708090a0b0c")
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, board_rev=2, flash_size=FLASH, serial=serial,
                            chip_id=0x20036450) as emu, Bootloader.open(emu.port) as boot:
        info = boot.identify()
    assert (info.bl_rev, info.board_id, info.board_rev, info.flash_size) == (5, BOARD, 2, FLASH)
    assert info.chip_id == 0x20036450
    assert info.serial == "04030201" "08070605" "0c0b0a09"  # each word shown reversed, as uploader.py does


def test_matching_flash_proves_the_approved_image_and_passes_appraisal() -> None:
    image = load_apj(apj(FW_IMAGE))
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH) as emu, Bootloader.open(emu.port) as boot:
        m = measure_flash(boot, image)
    assert m.kind is Kind.FIRMWARE_IMAGE and m.strength is Strength.IMAGE_AND_BOOTLOADER
    assert m.digests["sha256"] == image.sha256
    assert m.claims["crc_match"] is True and m.claims["board_id"] == BOARD
    assert m.source == f"bootloader:{emu.port}"
    world = World()
    ms = [m if x.kind is Kind.FIRMWARE_IMAGE else x for x in measurements()]
    assert appraise(ms, world.manifest()).passed


def test_unaligned_image_flashed_by_uploader_py_matches() -> None:
    image = load_apj(apj(KAT_UNALIGNED))
    with (BootloaderEmulator(as_uploader_py_programs(KAT_UNALIGNED), board_id=BOARD, flash_size=FLASH) as emu,
          Bootloader.open(emu.port) as boot):
        m = measure_flash(boot, image)
    assert m.claims["crc_padding"] == "uploader-py" and "sha256" in m.digests


def test_other_firmware_in_flash_is_a_firmware_mismatch() -> None:
    image = load_apj(apj(FW_IMAGE))
    flashed = bytearray(FW_IMAGE)
    flashed[100] ^= 1  # one bit
    with BootloaderEmulator(bytes(flashed), board_id=BOARD, flash_size=FLASH) as emu, \
            Bootloader.open(emu.port) as boot:
        m = measure_flash(boot, image)
    assert "sha256" not in m.digests and m.claims["crc_match"] is False
    ms = [m if x.kind is Kind.FIRMWARE_IMAGE else x for x in measurements()]
    assert Code.FIRMWARE_MISMATCH in appraise(ms, World().manifest()).codes


def test_image_for_another_board_is_not_claimed() -> None:
    image = load_apj(apj(FW_IMAGE, board_id=BOARD + 1))
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH) as emu, Bootloader.open(emu.port) as boot:
        m = measure_flash(boot, image)
    assert "sha256" not in m.digests
    assert m.claims["board_id"] == BOARD and m.claims["image_board_id"] == BOARD + 1


def test_client_sends_only_read_only_commands() -> None:
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH) as emu:
        with Bootloader.open(emu.port) as boot:
            measure_flash(boot, load_apj(apj(FW_IMAGE)))
            for opcode in (0x23, 0x27, 0x30, 0x24, 0x2D):  # CHIP_ERASE, PROG_MULTI, REBOOT, CHIP_VERIFY, SET_BOOT_DELAY
                with pytest.raises(BootloaderError, match="only reads"):
                    boot._send(opcode)
        time.sleep(0.1)
        assert emu.received and set(emu.received) <= READ_ONLY
        assert emu.refused == []


def test_silent_board_times_out_with_a_clear_error() -> None:
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH, mode="silent") as emu, \
            Bootloader.open(emu.port, timeout=0.1) as boot:
        start = time.monotonic()
        with pytest.raises(BootloaderError, match=r"no reply to GET_SYNC .* is the board in its bootloader"):
            boot.identify()
        assert time.monotonic() - start < 2


def test_something_else_on_the_port_is_not_taken_for_a_bootloader() -> None:
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH, mode="garbage") as emu, \
            Bootloader.open(emu.port, timeout=0.1) as boot, pytest.raises(BootloaderError, match="instead of INSYNC"):
        boot.identify()


def test_unknown_bootloader_protocol_is_refused() -> None:
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH, bl_rev=9) as emu, \
            Bootloader.open(emu.port) as boot, pytest.raises(BootloaderError, match="protocol 9"):
        boot.identify()


def test_bootloader_without_get_crc_cannot_measure() -> None:
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH, bl_rev=2) as emu, \
            Bootloader.open(emu.port) as boot:
        info = boot.identify()
        assert info.chip_id is None and info.serial == ""
        with pytest.raises(BootloaderError, match="no GET_CRC"):
            measure_flash(boot, load_apj(apj(FW_IMAGE)))


def test_rejected_command_is_named() -> None:
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH) as emu, \
            Bootloader.open(emu.port, timeout=0.2) as boot, \
            pytest.raises(BootloaderError, match=r"rejected it as invalid \(asked for value for GET_DEVICE"):
        boot.get_device(77)


def test_missing_serial_port_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BootloaderError, match=f"cannot open serial port {tmp_path}/ttyACM9"):
        Bootloader.open(str(tmp_path / "ttyACM9"))


@pytest.mark.parametrize("data,message", [
    (b"\x00\x01", "not an .apj"),
    (b'{"board_id": 9}', "no 'image' field"),
    (b'{"board_id": 9, "image": "%%%"}', "not base64 of zlib"),
    (b'{"board_id": 9, "image": "aGVsbG8="}', "not base64 of zlib"),
    (b'{"image": ""}', "board_id is missing"),
    (b'{"board_id": true, "image": ""}', "board_id is missing"),
    (apj(b"1234", magic="APJFWv2"), "magic"),
    (apj(b"1234", image_size=5), "image_size says 5"),
    (apj(b"1234", extf_image=base64.b64encode(zlib.compress(b"ext")).decode()), "external-flash"),
    (apj(bytes(17 * 1024 * 1024)), "inflates to more than"),
    (json.dumps({"board_id": 9, "image": base64.b64encode(zlib.compress(b"1234" * 99)[:-6]).decode()}).encode(),
     "truncated"),
])
def test_bad_apj_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        load_apj(data)


def test_image_larger_than_the_flash_is_refused() -> None:
    with pytest.raises(FormatError, match="larger than the board's"):
        FirmwareImage(bytes(100), BOARD).expected_crcs(64)


def test_bin_and_apj_files_load_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "fw.apj").write_bytes(apj(FW_IMAGE))
    (tmp_path / "fw.bin").write_bytes(FW_IMAGE)
    a, b = load_image(tmp_path / "fw.apj"), load_image(tmp_path / "fw.bin", board_id=BOARD)
    assert a.sha256 == b.sha256 and a.board_id == b.board_id == BOARD
    assert replace(a, name="x").expected_crcs(FLASH) == b.expected_crcs(FLASH)
    with pytest.raises(FormatError, match="is for board 9, not 10"):
        load_image(tmp_path / "fw.apj", board_id=10)


def test_cli_measure_prints_a_measurement_attest_accepts(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent.cli.main import main
    from attest.models import Measurement

    (tmp_path / "fw.apj").write_bytes(apj(FW_IMAGE))
    runner = CliRunner()
    with BootloaderEmulator(FW_IMAGE, board_id=BOARD, flash_size=FLASH) as emu:
        info = runner.invoke(main, ["bootloader", "info", "--port", emu.port], catch_exceptions=False)
        ok = runner.invoke(main, ["bootloader", "measure", "--port", emu.port, "--image", str(tmp_path / "fw.apj"),
                                  "-o", str(tmp_path / "m.json")], catch_exceptions=False)
    assert info.exit_code == 0 and f"board id {BOARD} rev 0, flash {FLASH} bytes" in info.output
    assert ok.exit_code == 0, ok.output
    (m,) = [Measurement.from_json(x) for x in json.loads((tmp_path / "m.json").read_text())]
    assert m.digests["sha256"] == load_apj(apj(FW_IMAGE)).sha256
    with BootloaderEmulator(KAT_ALIGNED, board_id=BOARD, flash_size=FLASH) as emu:
        bad = runner.invoke(main, ["bootloader", "measure", "--port", emu.port, "--image", str(tmp_path / "fw.apj")])
    assert bad.exit_code == 1 and "does not hold fw.apj" in bad.output
    gone = runner.invoke(main, ["bootloader", "info", "--port", str(tmp_path / "ttyACM0")])
    assert gone.exit_code == 1 and "Traceback" not in gone.output and "cannot open serial port" in gone.output
