"""Every path FlightSeal reads is a regular file, or refused at once (issue 11: FIFOs hung it).

Each reader runs in its own process, so a reader that blocks on the FIFO is a timeout here, not a
stuck test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

READERS = {
    "firmware file (agent measure)": """
from agent.measure.base import MeasureOptions
from agent.measure.firmware import _file
_file(P, MeasureOptions(), False)""",
    "firmware image (bootloader flash)": """
from hardware.firmware_image import load_image
load_image(P)""",
    "PKCS#11 PIN file": """
from hardware.pkcs11_backend import Pkcs11Uri, read_pin
read_pin(Pkcs11Uri("tok", "key", None, None, f"file:{P}"))""",
    "agent config in the companion measurement": """
from agent.measure.companion import _file_sha
_file_sha(P)""",
    "image cache (agent state)": """
from agent.measure.imagecache import ImageCache
assert ImageCache(P).entries == {}
raise OSError("refused: is not a regular file (the cache is read as empty)")""",
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_fifo_where_a_file_is_read_is_refused_at_once(tmp_path: Path, reader: str) -> None:
    fifo = tmp_path / "input"
    os.mkfifo(fifo, 0o600)
    body = READERS[reader].replace("\n", "\n    ")
    code = f"from pathlib import Path\nP = Path({str(fifo)!r})\ntry:{body}\n"
    code += "except Exception as exc:\n    print(type(exc).__name__, exc)\nelse:\n    print('ACCEPTED')\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "not a regular file" in done.stdout, done.stdout
