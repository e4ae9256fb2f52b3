"""PKCS#11 device keys (python-pkcs11): an EC P-256 key generated on the token that never leaves it.

Keys are named by RFC 7512 URIs. The path names the token and the key; the query names the
module and where the PIN comes from::

    pkcs11:token=FlightSeal;object=device-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/fs/pin

- path attributes: ``token``, ``serial``, ``manufacturer``, ``model`` (which token), ``object``,
  ``id`` (which key; percent-encoded bytes), ``type`` (``private`` or omitted);
- query attributes: ``module-path`` (else ``$FLIGHTSEAL_PKCS11_MODULE``), ``pin-source`` (a file,
  ``file:/path`` or ``/path``, readable by its owner only; else ``$FLIGHTSEAL_PKCS11_PIN``).
  ``pin-value`` is refused: a PIN in a URI ends up in shell history and process lists.

The key is generated on the token with ``SENSITIVE``, ``EXTRACTABLE=False`` and ``TOKEN=True``;
loading checks ``ALWAYS_SENSITIVE`` and ``NEVER_EXTRACTABLE``, so a key imported from outside or
ever exportable is refused rather than passed off as hardware. Signing hashes in software and
signs the digest with ``CKM_ECDSA`` (raw r‖s), because SoftHSM2 on Debian lacks
``CKM_ECDSA_SHA256``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from attest.errors import KeyLoadError
from attest.keys import KeyKind, PublicKey, raw_to_der
from attest.limits import LIMITS
from hardware.regular import open_regular

MODULE_ENV = "FLIGHTSEAL_PKCS11_MODULE"
PIN_ENV = "FLIGHTSEAL_PKCS11_PIN"
P256_OID = "1.2.840.10045.3.1.7"
MAX_PIN_BYTES = LIMITS.max_pin_bytes
_TOKEN_ATTRS = ("token", "serial", "manufacturer", "model")
_PATH_ATTRS = frozenset({*_TOKEN_ATTRS, "object", "id", "type"})
_QUERY_ATTRS = frozenset({"module-path", "pin-source"})


class Pkcs11Error(KeyLoadError):
    """The module, token, PIN or key named by a pkcs11: URI is unusable."""


@dataclass(frozen=True)
class Pkcs11Uri:
    token: dict[str, str] = field(default_factory=dict)  # token, serial, manufacturer, model
    object: str = ""
    id: bytes = b""
    module_path: str = ""
    pin_source: str = ""

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        if not uri.startswith("pkcs11:"):
            raise Pkcs11Error(f"{uri!r} is not a pkcs11: URI (RFC 7512)")
        path, _, query = uri[len("pkcs11:"):].partition("?")
        attrs: dict[str, str] = {}
        raw_id = b""
        for part in filter(None, path.split(";")):
            name, sep, value = part.partition("=")
            if not sep or name not in _PATH_ATTRS:
                raise Pkcs11Error(f"pkcs11 URI {uri!r}: unsupported path attribute {name!r} "
                                  f"(supported: {', '.join(sorted(_PATH_ATTRS))})")
            if name in attrs or (name == "id" and raw_id):
                raise Pkcs11Error(f"pkcs11 URI {uri!r}: attribute {name!r} appears twice")
            if name == "id":
                raw_id = unquote_to_bytes(value)
            else:
                attrs[name] = unquote(value, errors="strict")
        q: dict[str, str] = {}
        for part in filter(None, query.split("&")):
            name, sep, value = part.partition("=")
            if name == "pin-value":
                raise Pkcs11Error(f"pkcs11 URI {uri!r} carries pin-value: a PIN never goes in a URI or on the "
                                  f"command line; use pin-source=file:… or ${PIN_ENV}")
            if not sep or name not in _QUERY_ATTRS:
                raise Pkcs11Error(f"pkcs11 URI {uri!r}: unsupported query attribute {name!r} "
                                  f"(supported: {', '.join(sorted(_QUERY_ATTRS))})")
            q[name] = unquote(value, errors="strict")
        if attrs.get("type", "private") != "private":
            raise Pkcs11Error(f"pkcs11 URI {uri!r}: type must be private (the signing key)")
        if not attrs.get("object") and not raw_id:
            raise Pkcs11Error(f"pkcs11 URI {uri!r} names no key; add ;object=LABEL")
        return cls({k: v for k, v in attrs.items() if k in _TOKEN_ATTRS}, attrs.get("object", ""), raw_id,
                   q.get("module-path", ""), q.get("pin-source", ""))

    def __str__(self) -> str:
        parts = [f"{k}={_enc(v)}" for k, v in self.token.items()]
        if self.object:
            parts.append(f"object={_enc(self.object)}")
        if self.id:
            parts.append("id=" + "".join(f"%{b:02x}" for b in self.id))
        query = []
        if self.module_path:
            query.append(f"module-path={quote(self.module_path, safe='/-._~:@')}")
        if self.pin_source:
            query.append(f"pin-source={quote(self.pin_source, safe='/-._~:@')}")
        return "pkcs11:" + ";".join(parts) + ("?" + "&".join(query) if query else "")

    @property
    def described(self) -> str:
        what = self.object or "id " + self.id.hex()
        return f"key {what!r} on token {self.token.get('token') or self.token}"


def _enc(value: str) -> str:
    return quote(value, safe="-._~:@!$'()*+,")


def module_path(uri: Pkcs11Uri) -> str:
    path = uri.module_path or os.environ.get(MODULE_ENV, "")
    if not path:
        raise Pkcs11Error(f"no PKCS#11 module for {uri.described}: add ?module-path=/path/to/module.so to the URI "
                          f"or set ${MODULE_ENV} (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)")
    return path


def read_pin(uri: Pkcs11Uri) -> str:
    """The user PIN from ``pin-source`` or ``$FLIGHTSEAL_PKCS11_PIN``; never from a URI or argument."""
    if uri.pin_source:
        path = Path(uri.pin_source.removeprefix("file://").removeprefix("file:"))
        try:
            st = path.stat()
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise Pkcs11Error(f"PIN file {path} is readable by others; chmod 600 {path}")
            with open_regular(path) as f:
                data = f.read(MAX_PIN_BYTES + 1)
        except OSError as exc:
            raise Pkcs11Error(f"cannot read PIN file {path}: {exc.strerror}") from None
        if len(data) > MAX_PIN_BYTES:
            raise Pkcs11Error(f"PIN file {path} is longer than {MAX_PIN_BYTES} bytes; it should hold only the PIN")
        return data.decode("utf-8", errors="strict").rstrip("\r\n")
    pin = os.environ.get(PIN_ENV)
    if not pin:
        raise Pkcs11Error(f"{uri.described} needs the user PIN: set ${PIN_ENV} or add ?pin-source=file:/path "
                          "to the URI (never on the command line)")
    return pin


def _library(uri: Pkcs11Uri) -> Any:
    path = module_path(uri)
    try:
        return pkcs11.lib(path)
    except p11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot load PKCS#11 module {path} ({exc}); check module-path / ${MODULE_ENV}") from None


def _token(lib: Any, uri: Pkcs11Uri) -> Any:
    want = uri.token
    matches = []
    for slot in lib.get_slots(token_present=True):
        tok = slot.get_token()
        if (want.get("token", tok.label) == tok.label and want.get("serial", _s(tok.serial)) == _s(tok.serial)
                and want.get("manufacturer", tok.manufacturer_id) == tok.manufacturer_id
                and want.get("model", tok.model) == tok.model and tok.label):
            matches.append(tok)
    if not matches:
        labels = ", ".join(repr(s.get_token().label) for s in lib.get_slots(token_present=True)
                           if s.get_token().label) or "none"
        raise Pkcs11Error(f"no PKCS#11 token matches {want or '(any)'} (initialised tokens: {labels}); "
                          "check token= in the URI")
    if len(matches) > 1:
        raise Pkcs11Error(f"{len(matches)} tokens match {want or '(any)'}; add token= or serial= to the URI")
    return matches[0]


def _s(value: Any) -> str:
    return value.decode(errors="replace").strip() if isinstance(value, bytes) else str(value).strip()


def _login(token: Any, uri: Pkcs11Uri, rw: bool = False) -> Any:
    pin = read_pin(uri)
    try:
        return token.open(rw=rw, user_pin=pin)
    except p11.UserAlreadyLoggedIn:
        return token.open(rw=rw)  # PKCS#11 login is per application: another signer here logged in already
    except p11.PinIncorrect:
        raise Pkcs11Error(f"wrong PIN for PKCS#11 token {token.label!r} (from "
                          f"{'pin-source' if uri.pin_source else '$' + PIN_ENV}); the token locks after a few "
                          "wrong tries") from None
    except p11.PinLocked:
        raise Pkcs11Error(f"the user PIN of token {token.label!r} is locked; the security officer must reset it "
                          "(softhsm2-util / the token's admin tool)") from None
    except (p11.PinLenRange, p11.PinInvalid):
        raise Pkcs11Error(f"the PIN for token {token.label!r} has the wrong length or characters") from None
    except p11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot log in to token {token.label!r} ({type(exc).__name__} {exc})") from None


def _find(session: Any, cls: Any, uri: Pkcs11Uri) -> list[Any]:
    attrs: dict[Any, Any] = {Attribute.CLASS: cls, Attribute.KEY_TYPE: KeyType.EC}
    if uri.object:
        attrs[Attribute.LABEL] = uri.object
    if uri.id:
        attrs[Attribute.ID] = uri.id
    return list(session.get_objects(attrs))


class Pkcs11Signer:
    """A token-resident P-256 key as an :class:`attest.signer.Signer`. Keeps one logged-in session."""

    def __init__(self, uri: Pkcs11Uri, session: Any, private: Any, public: PublicKey) -> None:
        self.uri = uri
        self._session = session
        self._private = private
        self._public = public
        self._lock = threading.Lock()

    @classmethod
    def open(cls, uri: Pkcs11Uri | str) -> Pkcs11Signer:
        """Open the token and key an RFC 7512 URI names, logging in with its PIN.

        Raises:
            KeyLoadError: the module, token or key is missing, the PIN is wrong, or the key is
                not an EC P-256 key."""
        uri = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
        token = _token(_library(uri), uri)
        session = _login(token, uri)
        try:
            private, public = _load_pair(session, uri)
        except BaseException:
            session.close()
            raise
        return cls(uri, session, private, public)

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(p11.PKCS11Error):
            self._session.close()

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def kind(self) -> KeyKind:
        return KeyKind.PKCS11

    def sign(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        with self._lock:
            try:
                raw = self._private.sign(digest, mechanism=Mechanism.ECDSA)
            except p11.PKCS11Error as exc:
                raise Pkcs11Error(f"token refused to sign with {self.uri.described} "
                                  f"({type(exc).__name__} {exc})") from None
        return raw_to_der(bytes(raw))


def _load_pair(session: Any, uri: Pkcs11Uri) -> tuple[Any, PublicKey]:
    privs = _find(session, ObjectClass.PRIVATE_KEY, uri)
    if not privs:
        raise Pkcs11Error(f"no EC private {uri.described}; create it with `flightseal keys create --backend pkcs11 "
                          f"--token … --label {uri.object or '…'}`")
    if len(privs) > 1:
        raise Pkcs11Error(f"{len(privs)} private keys match {uri.described}; add id= to the URI")
    private = privs[0]
    if not (private[Attribute.ALWAYS_SENSITIVE] and private[Attribute.NEVER_EXTRACTABLE]):
        raise Pkcs11Error(f"{uri.described} was imported or has been exportable (ALWAYS_SENSITIVE / "
                          "NEVER_EXTRACTABLE not set); FlightSeal uses only keys generated on the token")
    pub_uri = Pkcs11Uri(uri.token, uri.object, uri.id or bytes(private[Attribute.ID] or b""))
    pubs = _find(session, ObjectClass.PUBLIC_KEY, pub_uri)
    if len(pubs) != 1:
        raise Pkcs11Error(f"{uri.described} has {len(pubs)} matching public key objects, not 1; the token "
                          "should hold the public half beside the private key")
    key = serialization.load_der_public_key(encode_ec_public_key(pubs[0]))
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Pkcs11Error(f"{uri.described} is not an ECDSA P-256 key")
    return private, PublicKey.from_crypto(key)


def create_key(uri: Pkcs11Uri | str) -> Pkcs11Signer:
    """Generate a P-256 key pair on the token (sensitive, never extractable); refuse to shadow a key."""
    uri = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
    if not uri.object:
        raise Pkcs11Error("a new PKCS#11 key needs a label (object= in the URI, --label on the command line)")
    token = _token(_library(uri), uri)
    session = _login(token, uri, rw=True)
    try:
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            if _find(session, cls, Pkcs11Uri(uri.token, uri.object)):
                raise Pkcs11Error(f"token {token.label!r} already holds a key labelled {uri.object!r}; use it "
                                  "as it is or choose another label")
        key_id = uri.id or secrets.token_bytes(16)
        try:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256_OID)}, local=True)
            params.generate_keypair(
                store=True, label=uri.object, id=key_id,
                public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
                private_template={Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SIGN: True,
                                  Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
        except (p11.DeviceMemory, p11.FunctionFailed) as exc:
            raise Pkcs11Error(f"token {token.label!r} is full or cannot store another key "
                              f"({type(exc).__name__}); delete an unused object or use another token") from None
        except p11.PKCS11Error as exc:
            raise Pkcs11Error(f"token {token.label!r} could not generate an EC P-256 key "
                              f"({type(exc).__name__} {exc})") from None
    finally:
        session.close()
    return Pkcs11Signer.open(Pkcs11Uri(uri.token, uri.object, key_id, uri.module_path, uri.pin_source))
