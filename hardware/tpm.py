"""TPM 2.0 device keys and quotes (tpm2-pytss): the attestation key never leaves the TPM.

Hierarchy and handles (see docs/adr/0003-tpm-keys.md for why):

- **AK**: an ECC P-256 *restricted* signing key (``ecc256:ecdsa-sha256:null``; fixedTPM,
  fixedParent, sensitiveDataOrigin, userWithAuth, noDA) in the **endorsement hierarchy**: an
  ordinary key (TPM2_Create, random secret) under a storage primary of that hierarchy, persisted
  at the URI's handle (``flightseal keys create`` uses ``0x81010100``, past the handles the TCG EK
  profile reserves). In the endorsement hierarchy the TPM reports its real reset and restart
  counters in quotes; for a key in the owner hierarchy it obfuscates them, and a verifier could
  not see them go back. The AK is the one device key: it signs quotes, and it signs attestations
  through a TPM2_Hash ticket, which the TPM issues only for data that does not start with
  ``TPM_GENERATED_VALUE``, so it can never sign a forged quote.
- **Auth** (ADR 0020): the AK has a random 32-byte authorisation value, kept in a 0600 file the
  agent's user owns (the URI's ``auth=``); without it the TPM refuses to sign or quote with the
  key, so another local process cannot. (Before issue 12 the AK was a primary key: anyone could
  create it again from its template with an auth value of their own.) Creating needs the
  endorsement and owner hierarchy auth: empty (the Linux default) or the values of
  ``FLIGHTSEAL_TPM_ENDORSEMENT_AUTH`` / ``FLIGHTSEAL_TPM_OWNER_AUTH``.
- **EK**: not used to sign. Its name, read from ``0x81010001`` (RSA, TCG) or ``0x81010002`` /
  ``0x81010016`` (ECC), goes into the enrollment record where present.
- **Agent PCR 13** (ADR 0020; the URI's ``agent-pcr=``, 8-15): not resettable from the OS. The
  agent extends one event at each start-up (its installed files and config) and keeps the log;
  quotes carry it. The measurements are bound by the quote's qualifying data.

Key URI grammar (also in the ADR)::

    tpm-uri = "tpm:" tcti *( ";" param )
    tcti    = "swtpm:" "host=" HOST ",port=" PORT      ; swtpm / mssim-style TCP simulator
            / "mssim:" "host=" HOST ",port=" PORT
            / "device:" PATH                           ; e.g. /dev/tpmrm0 (kernel resource manager)
            / "tabrmd" [ ":" CONF ]                    ; tpm2-abrmd over D-Bus
    param   = "handle=" HEX                            ; AK persistent handle, 0x81000000-0x81FFFFFF
            / "pcrs=" INDEX *( "," INDEX )             ; SHA-256 PCRs to quote; the agent PCR is always added
            / "agent-pcr=" INDEX                       ; 8-15, default 13
            / "auth=" PATH                             ; file holding the AK's authorisation value

Example: ``tpm:swtpm:host=127.0.0.1,port=2321;handle=0x81010100;auth=/var/lib/flightseal/ak.auth``.
Default PCRs: 0-9 (firmware, boot loader, kernel) and the agent PCR.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attest.limits import LIMITS

os.environ.setdefault("TSS2_LOG", "all+NONE")  # the TSS logs to stderr; our errors say it in one line

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_ECC,
    TPM2_RC,
    TPM2B_AUTH,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_OBJECT,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMS_SENSITIVE_CREATE,
    TPMT_HA,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMU_HA,
)
from tpm2_pytss.TCTILdr import TCTILdr
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from attest import quote as quotes
from attest.errors import KeyLoadError
from attest.keys import KeyKind, PublicKey
from attest.models import Measurement

DEFAULT_AK_HANDLE = 0x81010100
EK_HANDLES = (0x81010001, 0x81010002, 0x81010016)
PERSISTENT_FIRST, PERSISTENT_LAST = 0x81000000, 0x81FFFFFF
AGENT_PCR = quotes.AGENT_PCR
DEFAULT_PCRS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
AUTH_BYTES = 32
MAX_AUTH_FILE_BYTES = LIMITS.max_auth_file_bytes
MAX_DIGEST_BUFFER = 1024  # smallest TPM2B_MAX_BUFFER a PC Client TPM accepts
QUOTE_ATTEMPTS = 3
OWNER_AUTH_ENV = "FLIGHTSEAL_TPM_OWNER_AUTH"
ENDORSEMENT_AUTH_ENV = "FLIGHTSEAL_TPM_ENDORSEMENT_AUTH"
AUTH_DIR_ENV = "FLIGHTSEAL_TPM_AUTH_DIR"
TCTI_NAMES = ("swtpm", "mssim", "device", "tabrmd")

_A = TPMA_OBJECT
AK_ATTRIBUTES = (_A.SIGN_ENCRYPT | _A.RESTRICTED | _A.FIXEDTPM | _A.FIXEDPARENT | _A.SENSITIVEDATAORIGIN
                 | _A.USERWITHAUTH | _A.NODA)

Quoter = Callable[[bytes], dict[str, Any]]


class TpmError(KeyLoadError):
    """The TPM is unreachable, refused an operation, or holds no usable key where the URI says."""


@dataclass(frozen=True)
class TpmUri:
    tcti: str
    tcti_conf: str
    handle: int
    pcrs: tuple[int, ...] = DEFAULT_PCRS
    agent_pcr: int = AGENT_PCR
    auth_file: str = ""  # the AK's authorisation value; "" for an AK without one (made before issue 12)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcrs", tuple(sorted(set(self.pcrs) | {self.agent_pcr})))

    @property
    def tcti_text(self) -> str:
        return f"{self.tcti}:{self.tcti_conf}" if self.tcti_conf else self.tcti

    def __str__(self) -> str:
        out = f"tpm:{self.tcti_text};handle=0x{self.handle:08x}"
        if self.pcrs != tuple(sorted(set(DEFAULT_PCRS) | {self.agent_pcr})):
            out += ";pcrs=" + ",".join(str(p) for p in self.pcrs if p != self.agent_pcr)
        if self.agent_pcr != AGENT_PCR:
            out += f";agent-pcr={self.agent_pcr}"
        if self.auth_file:
            out += f";auth={self.auth_file}"
        return out

    @classmethod
    def parse(cls, uri: str) -> TpmUri:
        if not uri.startswith("tpm:"):
            raise KeyLoadError(f"{uri!r} is not a tpm: key URI")
        tcti_text, *params = uri[4:].split(";")
        name, _, conf = tcti_text.partition(":")
        if name not in TCTI_NAMES:
            raise KeyLoadError(f"TPM URI {uri!r}: TCTI {name!r} is not one of {', '.join(TCTI_NAMES)} "
                               "(e.g. tpm:device:/dev/tpmrm0;handle=0x81010100)")
        if name in ("swtpm", "mssim", "device") and not conf:
            raise KeyLoadError(f"TPM URI {uri!r}: TCTI {name} needs its configuration, e.g. "
                               + ("device:/dev/tpmrm0" if name == "device" else f"{name}:host=127.0.0.1,port=2321"))
        handle: int | None = None
        pcrs, agent_pcr, auth = DEFAULT_PCRS, AGENT_PCR, ""
        for p in params:
            key, sep, value = p.partition("=")
            if key == "handle" and sep:
                handle = _parse_handle(value, uri)
            elif key == "pcrs" and sep:
                pcrs = _parse_pcrs(value, uri)
            elif key == "agent-pcr" and sep:
                agent_pcr = _parse_agent_pcr(value, uri)
            elif key == "auth" and sep and value:
                auth = value
            else:
                raise KeyLoadError(f"TPM URI {uri!r}: unknown parameter {p!r} (known: handle=0x…, pcrs=0,1,…, "
                                   "agent-pcr=N, auth=FILE)")
        if handle is None:
            raise KeyLoadError(f"TPM URI {uri!r} names no key; add ;handle=0x{DEFAULT_AK_HANDLE:08x}")
        return cls(name, conf, handle, pcrs, agent_pcr, auth)


def _parse_handle(text: str, uri: str) -> int:
    try:
        handle = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise KeyLoadError(f"TPM URI {uri!r}: handle {text!r} is not a number like 0x81010100") from None
    if not PERSISTENT_FIRST <= handle <= PERSISTENT_LAST:
        raise KeyLoadError(f"TPM URI {uri!r}: handle 0x{handle:x} is not a persistent handle "
                           "(0x81000000 to 0x81ffffff)")
    return handle


def _parse_pcrs(text: str, uri: str) -> tuple[int, ...]:
    try:
        pcrs = {int(p) for p in text.split(",") if p}
    except ValueError:
        raise KeyLoadError(f"TPM URI {uri!r}: pcrs={text!r} is not a list of PCR numbers like 0,1,7") from None
    if any(not 0 <= p < quotes.PCR_COUNT for p in pcrs):
        raise KeyLoadError(f"TPM URI {uri!r}: PCR numbers go from 0 to {quotes.PCR_COUNT - 1}")
    return tuple(sorted(pcrs))


def _parse_agent_pcr(text: str, uri: str) -> int:
    if not text.isdigit() or int(text) not in quotes.AGENT_PCRS:
        raise KeyLoadError(f"TPM URI {uri!r}: agent-pcr={text!r} must be one of 8-15 (PCRs the OS can extend "
                           "but never reset)")
    return int(text)


def read_auth(uri: TpmUri) -> bytes:
    """The AK's authorisation value from the URI's file (0600, this user's): who can read it can use the key."""
    from hardware.regular import open_regular

    path = os.path.expanduser(uri.auth_file)
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise TpmError(f"the TPM key's auth file {path} is readable by others; chmod 600 {path}")
        with open_regular(Path(path)) as f:
            data = f.read(MAX_AUTH_FILE_BYTES + 1)
    except OSError as exc:
        raise TpmError(f"cannot read the TPM key's auth file {path}: {exc.strerror or exc}") from None
    if not 1 <= len(data) <= MAX_AUTH_FILE_BYTES:
        raise TpmError(f"the TPM key's auth file {path} must hold 1 to {MAX_AUTH_FILE_BYTES} bytes")
    return data


_FIXES = {
    "swtpm": "start swtpm (`swtpm socket --tpm2 --server type=tcp,port=P …`) or correct host/port in the key URI",
    "mssim": "start the simulator or correct host/port in the key URI",
    "device": "check the device exists (a TPM 2.0 with the kernel resource manager is /dev/tpmrm0) and that "
              "this user may open it (group tss)",
    "tabrmd": "start tpm2-abrmd (systemctl start tpm2-abrmd) or use tpm:device:/dev/tpmrm0",
}


def connect(uri: TpmUri) -> ESAPI:
    """An ESAPI context on the URI's TCTI, or one :class:`TpmError` naming the TCTI and the fix."""
    try:
        tcti = TCTILdr(uri.tcti, uri.tcti_conf) if uri.tcti_conf else TCTILdr(uri.tcti)
        return ESAPI(tcti)
    except TSS2_Exception as exc:
        raise TpmError(f"cannot reach the TPM through TCTI {uri.tcti_text} ({exc}): {_FIXES[uri.tcti]}") from None


def _scheme() -> Any:
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    return scheme


def _selection(pcrs: Sequence[int]) -> Any:
    sel = TPMS_PCR_SELECTION(hash=TPM2_ALG.SHA256, sizeofSelect=3)
    bitmap = bytearray(3)
    for i in pcrs:
        bitmap[i // 8] |= 1 << (i % 8)
    for b in range(3):
        sel.pcrSelect[b] = bitmap[b]
    return TPML_PCR_SELECTION([sel])


def _what(exc: TSS2_Exception) -> str:
    return str(exc).split(":", 1)[-1] if ":" in str(exc) else str(exc)


class TpmSigner:
    """The device's attestation key in a TPM, as an :class:`attest.signer.Signer` that also quotes."""

    def __init__(self, uri: TpmUri, esapi: ESAPI, key: Any, public: PublicKey, name: bytes) -> None:
        self.uri = uri
        self._esapi = esapi
        self._key = key
        self._public = public
        self.name = name
        self._lock = threading.Lock()
        self.agent_log: list[quotes.AgentEvent] = []  # the agent's events in its PCR since the TPM was reset
        self._broken = False  # a TSS call failed: the connection may be dead (TPM reset, swtpm or abrmd restarted)

    @classmethod
    def open(cls, uri: TpmUri | str) -> TpmSigner:
        """Open the TPM attestation key the URI names (its auth value read from the auth file).

        Raises:
            KeyLoadError: no TPM at the URI's TCTI, no key at the handle, the wrong key type,
                or an auth value the TPM refuses."""
        uri = uri if isinstance(uri, TpmUri) else TpmUri.parse(uri)
        esapi = connect(uri)
        try:
            key, public, name = _load_ak(esapi, uri)
        except BaseException:
            esapi.close()
            raise
        return cls(uri, esapi, key, public, name)

    def _open_ak(self) -> tuple[ESAPI, Any, PublicKey, bytes]:
        esapi = connect(self.uri)
        try:
            return (esapi, *_load_ak(esapi, self.uri))
        except BaseException:
            esapi.close()
            raise

    def __enter__(self) -> TpmSigner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._esapi.close()

    def _reconnect_if_broken(self) -> None:
        """After a failed call, open the TPM again before the next one (issue 11: a TPM that went away
        and came back left the agent failing every pass until restarted; the ESAPI context it kept was
        dead). The key found there must be the very key enrolled; another one is an error, never used.
        Called with the lock held."""
        if not self._broken:
            return
        with contextlib.suppress(Exception):
            self._esapi.close()
        esapi, key, public, name = self._open_ak()
        if public.keyid != self._public.keyid:
            esapi.close()
            raise TpmError(f"the TPM at {self.uri.tcti} came back with another key at 0x{self.uri.handle:08x} "
                           f"({public.keyid[:16]}…, enrolled {self._public.keyid[:16]}…): not this device's TPM")
        self._esapi, self._key, self.name, self._broken = esapi, key, name, False

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def kind(self) -> KeyKind:
        return KeyKind.TPM

    @property
    def ak_name(self) -> str:
        return self.name.hex()

    def sign(self, data: bytes) -> bytes:
        """ECDSA-SHA256 over ``data``: the TPM hashes it (issuing a ticket), then the restricted AK signs."""
        if data[:4] == quotes.TPM_GENERATED_VALUE.to_bytes(4, "big"):
            raise TpmError("the TPM attestation key does not sign data that starts with TPM_GENERATED_VALUE "
                           "(it could pass for a quote)")
        with self._lock:
            self._reconnect_if_broken()
            try:
                digest, ticket = self._hash(data)
                sig = self._esapi.sign(self._key, digest, _scheme(), ticket)
            except TSS2_Exception as exc:
                self._broken = True
                raise TpmError(f"TPM refused to sign with key 0x{self.uri.handle:08x} ({_what(exc)})") from None
        ecdsa = sig.signature.ecdsa
        return encode_dss_signature(int.from_bytes(bytes(ecdsa.signatureR), "big"),
                                    int.from_bytes(bytes(ecdsa.signatureS), "big"))

    def _hash(self, data: bytes) -> tuple[Any, Any]:
        if len(data) <= MAX_DIGEST_BUFFER:
            digest, ticket = self._esapi.hash(data, TPM2_ALG.SHA256, ESYS_TR.ENDORSEMENT)
            return digest, ticket
        seq = self._esapi.hash_sequence_start(b"", TPM2_ALG.SHA256)
        last = len(data) - ((len(data) - 1) % MAX_DIGEST_BUFFER + 1)
        for off in range(0, last, MAX_DIGEST_BUFFER):
            self._esapi.sequence_update(seq, data[off:off + MAX_DIGEST_BUFFER])
        digest, ticket = self._esapi.sequence_complete(seq, data[last:], ESYS_TR.ENDORSEMENT)
        return digest, ticket

    def quoter(self, measurements: Sequence[Measurement]) -> Quoter:
        """What ``agent.attestation.seal_measurements`` calls with the statement digest (which binds
        ``measurements``; they are no longer extended into a PCR, ADR 0020)."""
        return lambda qualifying: self.quote(qualifying)

    def quote(self, qualifying: bytes) -> dict[str, Any]:
        """Quote the URI's PCRs with ``qualifying`` as extraData, carrying :attr:`agent_log`.

        The PCRs are read after the quote and checked against its signed digest, and the agent PCR
        against the log, so a PCR that changed in between is retried, then reported, never shipped.
        """
        if len(qualifying) > 64:
            raise TpmError(f"qualifying data is {len(qualifying)} bytes; a quote takes at most 64")
        with self._lock:
            self._reconnect_if_broken()
            self._check_allocated()
            for _ in range(QUOTE_ATTEMPTS):
                quote = self._quote_once(qualifying)
                if quote is not None:
                    return quote.to_json()
        pcr = self.uri.agent_pcr
        raise TpmError(f"PCR {pcr} does not replay from the agent's log of {len(self.agent_log)} event(s): another "
                       f"process extends PCR {pcr} on this TPM (give the agent another: agent-pcr= in the key URI), "
                       "or the agent's state dir lost its log (reboot the companion)")

    def _quote_once(self, qualifying: bytes) -> quotes.Quote | None:
        e = self._esapi
        try:
            attest, sig = e.quote(self._key, _selection(self.uri.pcrs), qualifying, _scheme())
            values = self._read_pcrs()
        except TSS2_Exception as exc:
            self._broken = True
            raise TpmError(f"TPM quote with key 0x{self.uri.handle:08x} failed ({_what(exc)})") from None
        raw = bytes(attest)
        parsed = quotes.parse_attest(raw)
        log = tuple(self.agent_log)
        if parsed.pcr_digest != quotes.pcr_digest(parsed.pcr_select, values) or values[self.uri.agent_pcr] != \
                quotes.replay([ev.value for ev in log]):
            return None
        ecdsa = sig.signature.ecdsa
        der = encode_dss_signature(int.from_bytes(bytes(ecdsa.signatureR), "big"),
                                   int.from_bytes(bytes(ecdsa.signatureS), "big"))
        return quotes.Quote(raw, der, values, log, self.uri.agent_pcr)

    def extend_agent_pcr(self, event: quotes.AgentEvent) -> None:
        """Extend ``event`` into the agent PCR (the caller logs it first: agent/pcr_log.py)."""
        with self._lock:
            self._reconnect_if_broken()
            try:
                self._esapi.pcr_extend(ESYS_TR.parse(f"PCR{self.uri.agent_pcr}"), TPML_DIGEST_VALUES(
                    [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=event.value))]))
            except TSS2_Exception as exc:
                self._broken = True
                raise TpmError(f"cannot extend PCR {self.uri.agent_pcr} ({_what(exc)})") from None

    def agent_pcr_value(self) -> bytes:
        with self._lock:
            self._reconnect_if_broken()
            try:
                _, _, digests = self._esapi.pcr_read(_selection([self.uri.agent_pcr]))
            except TSS2_Exception as exc:
                self._broken = True
                raise TpmError(f"cannot read PCR {self.uri.agent_pcr} ({_what(exc)})") from None
            return bytes(digests[0])

    def reset_count(self) -> int:
        """The TPM's reset counter: it changes at every TPM reset (a boot), when all PCRs start again."""
        with self._lock:
            self._reconnect_if_broken()
            try:
                return int(self._esapi.read_clock().clockInfo.resetCount)
            except TSS2_Exception as exc:
                self._broken = True
                raise TpmError(f"cannot read the TPM clock ({_what(exc)})") from None

    def _read_pcrs(self) -> dict[int, bytes]:
        """TPM2_PCR_Read returns at most 8 digests per call; ask until every selected PCR is read."""
        wanted = list(self.uri.pcrs)
        out: dict[int, bytes] = {}
        while wanted:
            _, read_sel, digests = self._esapi.pcr_read(_selection(wanted))
            got = [i for s in read_sel for i in range(8 * s.sizeofSelect) if s.pcrSelect[i // 8] >> (i % 8) & 1]
            if not got:
                raise TpmError(f"TPM returned none of PCRs {wanted} in the SHA-256 bank")
            for i, d in zip(got, digests, strict=True):
                out[i] = bytes(d)
            wanted = [i for i in wanted if i not in out]
        return out

    def _check_allocated(self) -> None:
        try:
            _, caps = self._esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
        except TSS2_Exception as exc:
            self._broken = True
            raise TpmError(f"cannot read the TPM's PCR banks ({_what(exc)})") from None
        banks = caps.data.assignedPCR
        allocated: set[int] = set()
        for b in range(banks.count):
            s = banks.pcrSelections[b]
            if s.hash == TPM2_ALG.SHA256:
                allocated = {i for i in range(8 * s.sizeofSelect) if s.pcrSelect[i // 8] >> (i % 8) & 1}
        missing = sorted(set(self.uri.pcrs) - allocated)
        if missing:
            raise TpmError(f"PCR selection sha256:{','.join(map(str, missing))} is not allocated in this TPM "
                           f"(allocated sha256 PCRs: {sorted(allocated) or 'none'}); activate the SHA-256 bank "
                           "(tpm2_pcrallocate sha256:all, then reboot) or choose pcrs= in the key URI")

    def ek_name(self) -> str:
        """Name of the endorsement key at a TCG handle, hex, or "" when no EK is persisted."""
        return _name_at(self._esapi, EK_HANDLES)


def persistent_at(esapi: ESAPI, handles: Sequence[int]) -> Iterator[tuple[int, Any, Any, bytes]]:
    """(handle, object, public area, name) of each of ``handles`` that holds an object; the caller
    closes each object it is handed (``esapi.tr_close``) unless it keeps it."""
    for h in handles:
        try:
            tr = esapi.tr_from_tpmpublic(h)
        except TSS2_Exception:
            continue
        public, name, _ = esapi.read_public(tr)
        yield h, tr, public, bytes(name)


def _name_at(esapi: ESAPI, handles: Sequence[int]) -> str:
    for _, tr, _, name in persistent_at(esapi, handles):
        esapi.tr_close(tr)
        return name.hex()
    return ""


def _is_ak(public: Any) -> bool:
    p = public.publicArea
    attrs = int(p.objectAttributes)
    need = int(_A.SIGN_ENCRYPT | _A.RESTRICTED | _A.FIXEDTPM)
    return bool(p.type == TPM2_ALG.ECC and p.parameters.eccDetail.curveID == TPM2_ECC.NIST_P256
                and p.parameters.eccDetail.scheme.scheme == TPM2_ALG.ECDSA
                and p.parameters.eccDetail.scheme.details.anySig.hashAlg == TPM2_ALG.SHA256
                and attrs & need == need and not attrs & int(_A.DECRYPT))


def _load_ak(esapi: ESAPI, uri: TpmUri) -> tuple[Any, PublicKey, bytes]:
    try:
        key = esapi.tr_from_tpmpublic(uri.handle)
    except TSS2_Exception as exc:
        if exc.error == TPM2_RC.HANDLE:
            raise TpmError(f"no key at TPM handle 0x{uri.handle:08x} ({uri.tcti_text}); create one with "
                           f"`flightseal keys create --backend tpm --tcti {uri.tcti_text} "
                           f"--handle 0x{uri.handle:08x}`") from None
        raise TpmError(f"cannot read TPM handle 0x{uri.handle:08x} ({_what(exc)})") from None
    if uri.auth_file:
        esapi.tr_set_auth(key, read_auth(uri))
    public, name, _ = esapi.read_public(key)
    if not _is_ak(public):
        raise TpmError(f"the object at TPM handle 0x{uri.handle:08x} is not a FlightSeal attestation key "
                       "(a restricted ECC P-256 ECDSA-SHA256 signing key); it may be an EK, a storage key or another "
                       "application's key: use another handle")
    pem = public.publicArea.to_pem()
    return key, PublicKey(pem.decode() if isinstance(pem, bytes) else str(pem)), bytes(name)


def auth_dir() -> Path:
    """Where ``create_key`` puts an AK's auth file when the URI names none (FLIGHTSEAL_TPM_AUTH_DIR)."""
    return Path(os.environ.get(AUTH_DIR_ENV, "/var/lib/flightseal"))


def create_key(uri: TpmUri | str) -> TpmSigner:
    """Create the AK under an endorsement-hierarchy storage primary, with a random auth value written
    to the URI's ``auth=`` file (or one in :func:`auth_dir`), and persist it at the URI's handle.

    An occupied handle is refused: the key there may be enrolled already, and replacing it
    would orphan its enrollment. The returned signer's ``uri`` names the auth file.
    """
    uri = uri if isinstance(uri, TpmUri) else TpmUri.parse(uri)
    if uri.handle in EK_HANDLES:
        raise TpmError(f"handle 0x{uri.handle:08x} is reserved for the endorsement key (TCG EK profile); "
                       f"use another, e.g. 0x{DEFAULT_AK_HANDLE:08x}")
    if uri.handle > 0x817FFFFF:
        raise TpmError(f"handle 0x{uri.handle:08x} is in the platform range; use 0x81000000 to 0x817fffff")
    if not uri.auth_file:
        tag = hashlib.sha256(uri.tcti_text.encode()).hexdigest()[:12]
        uri = TpmUri(uri.tcti, uri.tcti_conf, uri.handle, uri.pcrs, uri.agent_pcr,
                     str(auth_dir() / f"tpm-ak-{tag}-{uri.handle:08x}.auth"))
    esapi = connect(uri)
    try:
        if _name_at(esapi, [uri.handle]):
            raise TpmError(f"TPM handle 0x{uri.handle:08x} already holds a key; use it as it is, choose another "
                           f"handle, or evict it yourself (tpm2_evictcontrol -c 0x{uri.handle:08x})")
        for env, hierarchy in ((OWNER_AUTH_ENV, ESYS_TR.OWNER), (ENDORSEMENT_AUTH_ENV, ESYS_TR.ENDORSEMENT)):
            if os.environ.get(env):
                esapi.tr_set_auth(hierarchy, os.environ[env].encode())
        auth = secrets.token_urlsafe(AUTH_BYTES * 3 // 4).encode()  # 32 printable bytes, 192 bits: tpm2-tools'
        # `-p file:` reads it as it is (random binary bytes with a NUL or a newline it did not)
        _write_auth(Path(uri.auth_file), auth)
        try:
            parent, *_ = esapi.create_primary(None, _parent_template(), ESYS_TR.ENDORSEMENT)
            try:
                sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=TPM2B_AUTH(auth)))
                private, public, *_ = esapi.create(parent, sensitive, ak_template())
                transient = esapi.load(parent, private, public)
                esapi.evict_control(ESYS_TR.OWNER, transient, uri.handle)
                esapi.flush_context(transient)
            finally:
                esapi.flush_context(parent)
        except TSS2_Exception as exc:
            Path(uri.auth_file).unlink(missing_ok=True)
            raise TpmError(_create_failure(exc, uri)) from None
    finally:
        esapi.close()
    return TpmSigner.open(uri)


def _write_auth(path: Path, auth: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(auth)
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:
        raise TpmError(f"the auth file {path} exists already (another key's?); move it away or name another with "
                       "auth= in the key URI") from None
    except OSError as exc:
        raise TpmError(f"cannot write the TPM key's auth file {path}: {exc.strerror or exc}") from None


def _parent_template() -> Any:
    """A storage primary of the endorsement hierarchy: derived again from the seed whenever needed,
    never persisted. Its only job is to be the AK's parent, so the AK stays in that hierarchy."""
    attrs = (_A.RESTRICTED | _A.DECRYPT | _A.FIXEDTPM | _A.FIXEDPARENT | _A.SENSITIVEDATAORIGIN | _A.USERWITHAUTH
             | _A.NODA)
    public = TPMT_PUBLIC.parse(alg="ecc256:aes128cfb", objectAttributes=attrs)
    public.unique.ecc.x = b"flightseal-ak-parent"
    return TPM2B_PUBLIC(public)


def ak_template() -> Any:
    """The AK's public template (its secret comes from the TPM's RNG, so no two AKs are alike)."""
    return TPM2B_PUBLIC(TPMT_PUBLIC.parse(alg="ecc256:ecdsa-sha256:null", objectAttributes=AK_ATTRIBUTES))


def _create_failure(exc: TSS2_Exception, uri: TpmUri) -> str:
    if exc.error in (TPM2_RC.BAD_AUTH, TPM2_RC.AUTH_FAIL):
        return (f"the TPM endorsement or owner hierarchy has a password: set {ENDORSEMENT_AUTH_ENV} / "
                f"{OWNER_AUTH_ENV} to it (never on the command line)")
    if exc.error == TPM2_RC.NV_SPACE:
        return "the TPM has no room for another persistent key: evict an unused one (tpm2_getcap handles-persistent)"
    return f"creating the TPM key at 0x{uri.handle:08x} failed ({_what(exc)})"
