"""A headless Chromium for the page tests: Debian's browser, driven by Playwright, never downloaded.

``chromium()`` yields a browser or skips the test with the reason (no /usr/bin/chromium, no
playwright). The flags keep it on loopback: no first-run, sync, component updates or background
networking, and no QUIC. Screenshots go to ``test-artifacts/<folder>/`` (``fleet`` unless told) under the
repository root.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "fleet"
CHROMIUM = Path(os.environ.get("FLIGHTSEAL_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless browser (``playwright.sync_api.Browser``), closed afterwards."""
    if not CHROMIUM.exists() and shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]' (the browser itself comes from Debian)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str, folder: str = "fleet") -> Path:
    """Save a full-page PNG as a test artefact and return its path."""
    directory = ARTIFACTS.parent / folder
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
