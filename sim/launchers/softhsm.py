"""A real SoftHSM2 PKCS#11 token store for tests and the demo, isolated in a temporary directory.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is initialised (C_Initialize), and sees only
the tokens that existed then. So :meth:`SoftHsm.activate` points this process at the temporary
configuration and re-initialises the module if it is already loaded, and :meth:`init_token`
does the same after ``softhsm2-util --init-token`` so the new token is visible at once.
Subprocesses get the configuration through :attr:`SoftHsm.env`.

    with SoftHsm() as hsm:
        hsm.init_token("FlightSeal", pin="1234")
        uri = hsm.key_uri("FlightSeal", "device-key")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from sim.launchers.service import Service
from sim.launchers.swtpm import SimError

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOOL_TIMEOUT = 30.0


class SoftHsm(Service):
    """A SoftHSM2 configuration and token directory of its own."""

    def __init__(self, module: str = DEFAULT_MODULE, *, activate: bool = True) -> None:
        self.module = module
        self._activate_on_enter = activate
        self._dir: Path | None = None
        self._saved_conf: str | None = None
        self._active = False

    @property
    def conf(self) -> Path:
        if self._dir is None:
            raise SimError("SoftHSM2 is not started")
        return self._dir / "softhsm2.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should see these tokens."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def start(self) -> None:
        if shutil.which("softhsm2-util") is None:
            raise SimError("softhsm2-util is not installed (apt-get install softhsm2)")
        if not Path(self.module).exists():
            raise SimError(f"SoftHSM2 module {self.module} is missing (apt-get install softhsm2)")
        self._dir = Path(tempfile.mkdtemp(prefix="flightseal-softhsm-"))
        tokens = self._dir / "tokens"
        tokens.mkdir()
        self.conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                             "slots.removable = false\n")
        if self._activate_on_enter:
            self.activate()

    def activate(self) -> None:
        """Point this process's PKCS#11 module at these tokens."""
        if not self._active:
            self._saved_conf = os.environ.get("SOFTHSM2_CONF")
            self._active = True
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        self._reload()

    def _reload(self) -> None:
        import pkcs11

        pkcs11.lib(self.module).reinitialize()

    def init_token(self, label: str, pin: str, so_pin: str = "") -> str:
        """Initialise a token in the first free slot; returns its label."""
        so_pin = so_pin or pin + "-so"
        cmd = ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin]
        try:
            done = subprocess.run(cmd, env=self.env, capture_output=True, timeout=TOOL_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise SimError(f"softhsm2-util took longer than {TOOL_TIMEOUT} s") from None
        if done.returncode != 0:
            raise SimError(f"softhsm2-util --init-token failed: {done.stderr.decode(errors='replace').strip()}")
        if self._active:
            self._reload()
        return label

    def key_uri(self, token: str, label: str, pin_source: Path | None = None) -> str:
        uri = f"pkcs11:token={quote(token, safe='')};object={quote(label, safe='')}?module-path={self.module}"
        if pin_source is not None:
            uri += f"&pin-source=file:{pin_source}"
        return uri

    def stop(self) -> None:
        if self._active:
            if self._saved_conf is None:
                os.environ.pop("SOFTHSM2_CONF", None)
            else:
                os.environ["SOFTHSM2_CONF"] = self._saved_conf
            self._active = False
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
