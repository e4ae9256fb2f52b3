"""Approved firmware images (``.apj`` / ``.bin``) and the flash CRC a bootloader reports for them.

An ``.apj`` is JSON with the image zlib-compressed and base64-encoded in ``image`` and the
board it is for in ``board_id`` (ArduPilot's ``Tools/ardupilotwaf/chibios.py``). The image's
SHA-256 (the ``.bin`` bytes) is what a manifest approves.

The bootloader's GET_CRC is ArduPilot's ``crc_crc32`` (reflected CRC-32, initial value 0, no
final XOR) over the whole application flash, word by word, so the expected value is the CRC of
the image as programmed, padded with erased flash (0xff) to the flash size the board reports.
"As programmed" has a wrinkle for images whose length is not a multiple of 4: ArduPilot's
``uploader.py`` pads them with ``bytes(0xFF)``, which in Python 3 is 255 *zero* bytes per step,
while erased flash is 0xff. :meth:`FirmwareImage.expected_crcs` gives both candidates; for the
4-aligned images ArduPilot builds they are the same.

A CRC-32 is not a cryptographic digest: anyone who can choose the flash contents can match a
CRC. The check catches the wrong or a corrupted image, not a deliberate forgery; that is what
``@SYS/flash.bin`` read-back (strength ``flash-read``) is for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from attest.errors import FormatError
from attest.limits import LIMITS
from hardware.regular import open_regular

MAX_APJ_BYTES = LIMITS.max_apj_bytes
MAX_IMAGE_BYTES = LIMITS.max_firmware_image_bytes
APJ_MAGIC = "APJFWv1"
_ERASED_WORD = b"\xff\xff\xff\xff"


def ap_crc32(data: bytes, state: int = 0) -> int:
    """ArduPilot's ``crc_crc32``: zlib's CRC-32 without its pre- and post-inversion."""
    return zlib.crc32(data, state ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


@dataclass(frozen=True)
class FirmwareImage:
    image: bytes  # the application image (.bin bytes), as the manifest approves it
    board_id: int | None  # from the .apj; None for a bare .bin
    name: str = ""
    git_identity: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.image).hexdigest()

    def expected_crcs(self, flash_size: int) -> dict[str, int]:
        """The GET_CRC value for this image programmed into ``flash_size`` bytes of flash, per padding rule."""
        if len(self.image) > flash_size:
            raise FormatError(f"firmware image {self.name}", f"is {len(self.image)} bytes, larger than the board's "
                              f"{flash_size}-byte flash")
        out = {"erased-ff": _crc_padded(self.image, flash_size)}
        uploader = self.image
        while len(uploader) % 4:
            uploader += bytes(255)
        if uploader != self.image and len(uploader) <= flash_size:
            out["uploader-py"] = _crc_padded(uploader, flash_size)
        return out


def _crc_padded(image: bytes, flash_size: int) -> int:
    aligned = image + b"\xff" * (-len(image) % 4)
    words = len(range(len(aligned), flash_size - 1, 4))  # as uploader.py's firmware.crc()
    return ap_crc32(_ERASED_WORD * words, ap_crc32(aligned))


def load_apj(data: bytes, name: str = "firmware.apj") -> FirmwareImage:
    what = f"firmware image {name}"
    if len(data) > MAX_APJ_BYTES:
        raise FormatError(what, f"is larger than {MAX_APJ_BYTES} bytes")
    try:
        desc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(what, "is not an .apj (JSON) file") from None
    if not isinstance(desc, dict) or not isinstance(desc.get("image"), str):
        raise FormatError(what, "has no 'image' field; is it an .apj?")
    if desc.get("magic", APJ_MAGIC) != APJ_MAGIC:
        raise FormatError(what, f"magic {desc.get('magic')!r} is not {APJ_MAGIC}")
    board_id = desc.get("board_id")
    if not isinstance(board_id, int) or isinstance(board_id, bool) or not 0 <= board_id < 2**32:
        raise FormatError(what, "board_id is missing or not a 32-bit number", "board_id")
    image = _inflate(desc["image"], what, "image")
    if isinstance(desc.get("extf_image"), str) and _inflate(desc["extf_image"], what, "extf_image"):
        raise FormatError(what, "has an external-flash part, which the bootloader CRC does not cover; "
                          "measure this board through @SYS/flash.bin instead")
    size = desc.get("image_size")
    if size is not None and size != len(image):
        raise FormatError(what, f"image_size says {size} bytes, the image has {len(image)}", "image_size")
    git = desc.get("git_identity", "")
    return FirmwareImage(image, board_id, name, git if isinstance(git, str) else "")


def _inflate(text: str, what: str, field: str) -> bytes:
    try:
        packed = base64.b64decode(text, validate=True)
        d = zlib.decompressobj()
        image = d.decompress(packed, MAX_IMAGE_BYTES + 1)
    except (binascii.Error, ValueError, zlib.error):
        raise FormatError(what, "is not base64 of zlib data", field) from None
    if len(image) > MAX_IMAGE_BYTES or d.unconsumed_tail:
        raise FormatError(what, f"inflates to more than {MAX_IMAGE_BYTES} bytes", field)
    if not d.eof:
        raise FormatError(what, "zlib stream is truncated", field)
    return image


def load_image(path: Path, board_id: int | None = None) -> FirmwareImage:
    """An ``.apj`` (board id inside) or a ``.bin`` (board id from the caller, or unchecked)."""
    try:
        with open_regular(path) as f:
            data = f.read(MAX_APJ_BYTES + 1)
    except OSError as exc:
        raise FormatError(f"firmware image {path}", f"cannot be read: {exc.strerror}") from None
    if path.suffix == ".apj":
        image = load_apj(data, path.name)
        if board_id is not None and board_id != image.board_id:
            raise FormatError(f"firmware image {path}", f"is for board {image.board_id}, not {board_id}")
        return image
    if len(data) > MAX_IMAGE_BYTES:
        raise FormatError(f"firmware image {path}", f"is larger than {MAX_IMAGE_BYTES} bytes")
    return FirmwareImage(data, board_id, path.name)
