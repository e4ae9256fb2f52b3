"""A real software TPM 2.0 (swtpm) for tests and the demo, on free loopback ports.

``swtpm_setup --tpm2 --createek`` provisions the state (RSA and ECC EKs, SHA-256 PCR bank) in a
temporary directory, then ``swtpm socket`` serves it on 127.0.0.1 with ``startup-clear``, so the
TPM is ready without a TPM2_Startup from us. Leaving the context stops swtpm and deletes the
state. Nothing is mocked: the code under test talks to it through the ordinary swtpm TCTI.

``Swtpm(ek_cert=True)`` also has ``swtpm_setup --create-ek-cert`` write EK certificates into NV
(0x01c00002 RSA, 0x01c00016 ECC P-384), issued by swtpm's local CA (``swtpm_localca``) configured
in a temporary directory of our own, never ``/var/lib/swtpm-localca``. The CA is made on first use
(a root and an intermediate "swtpm-localca"); ``ek_ca_certs`` are their PEM files, what a test
passes as the TPM vendor CAs. Several TPMs share one CA when given the same ``ca_dir``. That CA is
trusted only in tests and the demo.

    with Swtpm() as tpm:
        signer = hardware.tpm.create_key(tpm.key_uri(0x81010100))
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from attest.errors import FlightSealError
from sim.launchers.service import Service

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
SETUP_TIMEOUT = 30.0
PORT_ATTEMPTS = 5


class SimError(FlightSealError):
    """A simulator (swtpm, SoftHSM2, an emulated bootloader) could not be started."""


def _free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swtpm's server and control ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise SimError("no two adjacent free TCP ports on 127.0.0.1 for swtpm")


class Swtpm(Service):
    """One swtpm process and its state directory."""

    def __init__(self, *, pcr_banks: str = "sha256", create_ek: bool = True, ek_cert: bool = False,
                 ca_dir: Path | None = None) -> None:
        self.pcr_banks = pcr_banks
        self.create_ek = create_ek
        self.ek_cert = ek_cert
        self._ca_dir = ca_dir
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        """TCTI in key-URI form, e.g. ``swtpm:host=127.0.0.1,port=2321``."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def key_uri(self, handle: int) -> str:
        return f"tpm:{self.tcti};handle=0x{handle:08x}"

    @property
    def state_dir(self) -> Path:
        if self._dir is None:
            raise SimError("swtpm is not started")
        return self._dir / "state"

    @property
    def ca_dir(self) -> Path:
        """The local CA's directory (its keys, certificates and configuration)."""
        if self._ca_dir is not None:
            return self._ca_dir
        if self._dir is None:
            raise SimError("swtpm is not started")
        return self._dir / "localca"

    @property
    def ek_ca_certs(self) -> tuple[Path, Path]:
        """The local CA's root and intermediate certificates (PEM) that issued the EK certificates."""
        if not self.ek_cert:
            raise SimError("this swtpm has no EK certificate; start it with Swtpm(ek_cert=True)")
        return self.ca_dir / "swtpm-localca-rootca-cert.pem", self.ca_dir / "issuercert.pem"

    def start(self) -> None:
        for tool in ("swtpm", "swtpm_setup") + (("swtpm_localca",) if self.ek_cert else ()):
            if shutil.which(tool) is None:
                raise SimError(f"{tool} is not installed (apt-get install swtpm swtpm-tools)")
        self._dir = Path(tempfile.mkdtemp(prefix="flightseal-swtpm-"))
        self.state_dir.mkdir()
        try:
            self._setup()
            for _ in range(PORT_ATTEMPTS):
                if self._spawn():
                    return
            raise SimError(f"swtpm did not start on a free port after {PORT_ATTEMPTS} tries: {self._log()}")
        except BaseException:
            self.stop()
            raise

    def _setup(self) -> None:
        cmd = ["swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir), "--pcr-banks", self.pcr_banks,
               "--logfile", str(self._logfile)]
        if self.create_ek:
            cmd.append("--createek")
        if self.ek_cert:
            cmd += ["--create-ek-cert", "--config", str(self._local_ca_config())]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=SETUP_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise SimError(f"swtpm_setup took longer than {SETUP_TIMEOUT} s") from None
        if done.returncode != 0:
            raise SimError(f"swtpm_setup failed ({done.returncode}): {self._log()}")

    def _local_ca_config(self) -> Path:
        """swtpm_setup.conf and swtpm-localca.conf pointing at our CA directory (created if new)."""
        ca = self.ca_dir
        ca.mkdir(parents=True, exist_ok=True)
        localca = ca / "swtpm-localca.conf"
        if not localca.exists():
            localca.write_text(f"statedir = {ca}\nsigningkey = {ca / 'signkey.pem'}\n"
                               f"issuercert = {ca / 'issuercert.pem'}\ncertserial = {ca / 'certserial'}\n")
            (ca / "swtpm-localca.options").write_text("--platform-manufacturer FlightSeal\n--platform-version 2.1\n"
                                                      "--platform-model swtpm\n")
        setup = ca / "swtpm_setup.conf"
        if not setup.exists():
            tool = shutil.which("swtpm_localca") or "/usr/bin/swtpm_localca"
            setup.write_text(f"create_certs_tool = {tool}\ncreate_certs_tool_config = {localca}\n"
                             f"create_certs_tool_options = {ca / 'swtpm-localca.options'}\n")
        return setup

    @property
    def _logfile(self) -> Path:
        assert self._dir is not None
        return self._dir / "swtpm.log"

    def _log(self) -> str:
        try:
            return self._logfile.read_text(errors="replace").strip()[-2000:] or "(no log)"
        except OSError:
            return "(no log)"

    def _spawn(self, port: int | None = None) -> bool:
        self.port = port or _free_port_pair()
        cmd = ["swtpm", "socket", "--tpm2",
               "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
               "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
               "--flags", "not-need-init,startup-clear",
               "--tpmstate", f"dir={self.state_dir}",
               "--log", f"file={self._logfile}"]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False  # most likely lost a race for the port: try another pair
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        self._terminate()
        raise SimError(f"swtpm did not listen on 127.0.0.1:{self.port} within {START_TIMEOUT} s: {self._log()}")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def pause(self) -> None:
        """Stop the swtpm process but keep its state and its port: the TPM goes away (fault tests)."""
        self._terminate()

    def resume(self) -> None:
        """Serve the same state on the same port again: the TPM that went away comes back."""
        if self._dir is None:
            raise SimError("swtpm is not started")
        if self._proc is None and not self._spawn(self.port):
            raise SimError(f"swtpm did not start again on 127.0.0.1:{self.port}: {self._log()}")

    def evict(self, handle: int) -> None:
        """Remove the persistent object at ``handle``, so a test leaves the TPM as it found it."""
        from tpm2_pytss import ESYS_TR

        from hardware.tpm import TpmUri, connect

        esapi = connect(TpmUri("swtpm", f"host=127.0.0.1,port={self.port}", handle))
        try:
            tr = esapi.tr_from_tpmpublic(handle)
            esapi.evict_control(ESYS_TR.OWNER, tr, handle)
        finally:
            esapi.close()

    def stop(self) -> None:
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
