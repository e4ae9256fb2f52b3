"""Issue 11's fuzzing campaign: hostile MAVLink at a running agent, generated files at every parser.

Property tests (tests/test_parsers_fuzz.py) try a few hundred inputs per parser; an attacker tries
millions, and the issue's own run found what a few hundred did not (a gate wedged 9 s in, a pass that
lapsed while re-attesting). This module runs the same checks at scale, in two halves that share one
report format so the README can quote the last result:

* **frames** (:func:`run_frame_campaign`): the agent runs as its own process (``flightseal agent run``),
  so a crash is an exit, a traceback is in its output and its memory is its own ``VmRSS``. Its link to
  the virtual FC (the real Lua gate in lupa) goes through :class:`Interposer`, a TCP relay that passes
  the real traffic frame by frame and, between two real frames, writes hostile ones in both
  directions: toward the agent (as from the FC or a router's other clients) and toward the FC, on the
  agent's own channel, where the gate reads verdicts. The relay also reads the real verdicts and the
  gate's MAC-checked acks, which is how a hang, a wedged sequence or a slow pass that lapsed is seen
  from outside, without trusting the agent's own account.
* **files** (:func:`run_file_campaign`): every parser FlightSeal reads from disk, called in process
  (fast enough for 100,000 inputs each) on mutated valid seeds. Signed documents are also mutated
  *inside* the signature (re-signed with the test keys), or no mutation would ever reach the parsers
  behind the signature check. A parser may accept or raise a :class:`~attest.errors.FlightSealError`
  (the one error type every entry point documents); anything else is a finding, saved with its input.

Every loop has a deadline; counts come from the caller, so the same code is the CI smoke run and the
100,000-input campaign.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

os.environ.setdefault("MAVLINK20", "1")

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from attest.errors import FlightSealError

# ----------------------------------------------------------------------------------------------- report


@dataclass
class Finding:
    """One input that made a parser, the agent or the gate misbehave, with what is needed to replay it."""

    where: str
    what: str
    detail: str
    saved: str = ""

    def __str__(self) -> str:
        return f"[{self.where}] {self.what}: {self.detail}" + (f" (input: {self.saved})" if self.saved else "")


def table(title: str, rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A plain-text table (the README quotes it as printed)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- mutation


class Raw(str):
    """A token written into JSON or TOML text as is (NaN, 1e400, a 5,000-digit integer): values no
    encoder emits, which is exactly why a parser must be tried on them."""


RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "-0.0", "1" + "0" * 5000,
              "123456789012345678901234567890", "0.1e1", "1E2", "00", "+1", ".5", "0x10", "true", "null"]
INTERESTING: list[Any] = [None, True, False, 0, -1, 1, 255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63,
                          2**64, -(2**63) - 1, 10**30, 0.5, -0.0, 1.0, 1e308, 5e-324, "", " ", "x" * 5000, "\u0000",
                          "\ud800", "\udfff", "\u202e", "é", "\U0001f6e9", "../../etc/passwd", "%s%n", "\n", "\ufeff",
                          "0", "1", "true", "null", "2026-13-45T99:99:99Z", "ab" * 32, [], {}, [[]], {"": None}]
BOM = b"\xef\xbb\xbf"
BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xfe\xff", b"\x00"]


def _interesting(rng: random.Random) -> Any:
    if rng.random() < 0.25:
        return Raw(rng.choice(RAW_TOKENS))
    return copy.deepcopy(rng.choice(INTERESTING))


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four byte-level mutations: what a broken disk, a bad copy or a hand edit leaves."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(12)
        n = len(buf)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x22, 0x5C, 0x7B, 0x5B, 0x0A, 0x3D])
        elif op == 2 and n:  # truncation
            buf = buf[:rng.randrange(n)]
        elif op == 3 and n:  # delete a range
            a = rng.randrange(n)
            del buf[a:a + rng.randint(1, 64)]
        elif op == 4 and n:  # duplicate a range
            a = rng.randrange(n)
            chunk = buf[a:a + rng.randint(1, 256)]
            buf[a:a] = chunk * rng.randint(1, 8)
        elif op == 5:
            buf[rng.randint(0, n):rng.randint(0, n)] = rng.randbytes(rng.randint(1, 32))
        elif op == 6 and pool:  # splice with another seed
            other = rng.choice(pool)
            cut, ocut = rng.randint(0, n), rng.randint(0, len(other))
            buf = buf[:cut] + other[ocut:]
        elif op == 7:
            buf = bytearray(BOM) + buf
        elif op == 8:
            at = rng.randint(0, n)
            buf[at:at] = rng.choice(BAD_UTF8)
        elif op == 9:  # a number out of range in place of one
            text = bytes(buf)
            spans = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", text)]
            if spans:
                a, b = rng.choice(spans)
                buf = bytearray(text[:a] + rng.choice(RAW_TOKENS).encode() + text[b:])
        elif op == 10:  # deep nesting
            depth = rng.choice([64, 1000, 3000, 20000])
            at = rng.randint(0, n)
            buf[at:at] = b"[" * depth + b"]" * depth
        elif op == 11 and n > 1:  # swap two chunks
            a, b = sorted(rng.sample(range(n), 2))
            size = rng.randint(1, max(1, min(32, b - a)))
            buf[a:a + size], buf[b:b + size] = buf[b:b + size], buf[a:a + size]
    return bytes(buf)


def _nodes(value: Any, out: list[tuple[Any, Any]], parent: Any = None, key: Any = None) -> None:
    out.append((parent, key))
    if isinstance(value, dict):
        for k, v in value.items():
            _nodes(v, out, value, k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _nodes(v, out, value, i)


def mutate_value(rng: random.Random, value: Any) -> Any:
    """A structure-aware mutation of a parsed document: the fields exist, their values are hostile
    (type swaps, huge numbers, odd strings, deleted or unknown keys, deep nesting, duplicates)."""
    root = [copy.deepcopy(value)]
    for _ in range(rng.randint(1, 3)):
        nodes: list[tuple[Any, Any]] = []
        _nodes(root[0], nodes, root, 0)
        parent, key = rng.choice(nodes)
        current = parent[key]
        op = rng.randrange(9)
        if op <= 2:
            parent[key] = _interesting(rng)
        elif op == 3:  # type swap
            swaps = [str(current), [current], {"v": current}, len(str(current)), Raw(json.dumps(str(current)))]
            parent[key] = rng.choice(swaps) if not isinstance(current, dict) else list(current.items())
        elif (op == 4 and isinstance(parent, dict)) or (op == 4 and isinstance(parent, list) and parent is not root):
            del parent[key]
        elif op == 5 and isinstance(current, dict):
            current[rng.choice(["x", "", "__proto__", "version", "\u0000", "a" * 300])] = _interesting(rng)
        elif op == 6 and isinstance(current, dict) and current:
            k = rng.choice(list(current))
            current[f"__DUP__{k}"] = _interesting(rng)  # written as a second ``k`` by dump_json
        elif op == 7:
            parent[key] = Raw("[" * (d := rng.choice([100, 900, 3000])) + "]" * d)
        elif op == 8 and isinstance(current, list) and current:
            parent[key] = current * rng.choice([2, 100, 3000])
        else:
            parent[key] = _interesting(rng)
    return root[0]


_RAW_RE = re.compile(r'"__RAW__(.*?)__WAR__"')


def _rawify(value: Any) -> Any:
    if isinstance(value, Raw):
        return f"__RAW__{value}__WAR__"
    if isinstance(value, dict):
        return {k: _rawify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rawify(v) for v in value]
    return value


def dump_json(rng: random.Random, value: Any) -> bytes:
    """JSON text for a mutated value, in one of the encodings a person or a tool might write."""
    text = json.dumps(_rawify(value), ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1]),
                      sort_keys=rng.random() < 0.3, allow_nan=True)
    text = _RAW_RE.sub(lambda m: json.loads(f'"{m.group(1)}"'), text).replace('"__DUP__', '"')
    return text.encode("utf-8", "surrogatepass")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v) if v is not None else "")


TOML_TOKENS = ["nan", "inf", "-inf", "1e400", "9" * 30, "0x7fffffffffffffff", "0o777", "1979-05-27T07:32:00Z",
               "'''multi\nline'''", '"\\u0000"', '"\\ud800"', "+0.0", "1_000", "[1, [2, [3]]]", "{a = {b = 1}}"]


def dump_toml(rng: random.Random, value: Any) -> bytes:
    """TOML text for a mutated config (tables of key = value), written by hand so hostile values fit."""
    lines = []
    tables = {k: v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}
    for k, v in (value.items() if isinstance(value, dict) else []):
        if k not in tables:
            lines.append(f"{_toml_key(str(k))} = {_toml_value(v)}")
    for name, body in tables.items():
        lines.append(f"[{_toml_key(str(name))}]")
        for k, v in body.items():
            token = Raw(rng.choice(TOML_TOKENS)) if rng.random() < 0.05 else v
            lines.append(f"{_toml_key(str(k))} = {_toml_value(token)}")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------------------------------ file targets


@dataclass
class FileTarget:
    """One parser FlightSeal reads from disk: its seeds, how to mutate them, and how to call it.

    ``parse`` gets the input bytes and returns a short outcome label when it accepts; it raises
    FlightSealError to refuse. ``structured`` makes an input by mutating inside the document (and
    re-signing it when it is signed); ``None`` means byte mutations only.
    """

    name: str
    reads: str  # the file it stands for, for the table
    seeds: list[bytes]
    parse: Callable[[bytes], str]
    structured: Callable[[random.Random], bytes] | None = None


@dataclass
class FileReport:
    per_target: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    known: dict[tuple[str, str], str] = field(default_factory=dict)  # KNOWN_OPEN seen: (target, why) → example

    def render(self) -> str:
        rows = []
        for name, c in self.per_target.items():
            files = sum(v for k, v in c.items() if not k.startswith("~"))
            accepted = sum(v for k, v in c.items() if k.startswith("accepted"))
            refused = files - accepted - c["finding"]
            secs = self.seconds.get(name, 0.0)
            known = sum(v for k, v in c.items() if k.startswith("~known"))
            rows.append((name, str(files), str(accepted), str(refused), str(c["finding"]), str(known),
                         f"{secs:.1f}", f"{files / secs:.0f}" if secs else "-"))
        total = sum(self.seconds.values())
        return table(f"files per parser ({total:.0f} s)", rows,
                     ("parser", "files", "accepted", "refused", "findings", "known-open", "s", "files/s"))


class _Slow(BaseException):
    """Raised by the watchdog alarm: a single input kept a parser busy too long (a hang)."""


def _alarm(_sig: int, _frame: FrameType | None) -> None:
    raise _Slow()


PARSE_DEADLINE_S = 10.0  # one input, one parser: anything this slow is a hang (they take ~0.1 ms)

# Findings in code this campaign's author may not change, reported and awaiting their fix: counted as
# "known" (printed, not failed on) so the campaign stays green for everything else. Remove an entry
# when it is fixed; the campaign then proves the fix at scale.
KNOWN_OPEN: dict[tuple[str, str], str] = {}  # (target, exception) → why; the last two were fixed


def run_file_campaign(targets: list[FileTarget], files_per_target: int, seed: int, findings_dir: Path,
                      *, progress: Callable[[str], None] | None = None) -> FileReport:
    """``files_per_target`` inputs at each target; findings are saved under ``findings_dir``."""
    report = FileReport()
    findings_dir.mkdir(parents=True, exist_ok=True)
    use_alarm = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    pool = [s for t in targets for s in t.seeds]
    try:
        for target in targets:
            rng = random.Random(f"{seed}:{target.name}")
            counts: Counter[str] = Counter()
            saved = 0
            started = time.monotonic()
            for i in range(files_per_target):
                if i < len(target.seeds):
                    data = target.seeds[i]  # the seeds themselves first: they must be accepted
                elif target.structured is not None and rng.random() < 0.5:
                    data = target.structured(rng)
                    if rng.random() < 0.2:
                        data = mutate_bytes(rng, data, pool)
                else:
                    data = mutate_bytes(rng, rng.choice(target.seeds), pool)
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, PARSE_DEADLINE_S)
                try:
                    counts["accepted " + target.parse(data)] += 1
                except FlightSealError as exc:
                    counts[f"~{type(exc).__name__}"] += 1
                    counts["refused"] += 1
                except (Exception, _Slow) as exc:
                    known = KNOWN_OPEN.get((target.name, type(exc).__name__))
                    if known is not None:
                        counts["refused"] += 1
                        counts["~known: " + type(exc).__name__] += 1
                        if (target.name, known) not in report.known:
                            report.known[(target.name, known)] = str(exc)[:200]
                        continue
                    counts["finding"] += 1
                    if saved < 20:
                        path = findings_dir / f"{target.name}-{i}.bin"
                        path.write_bytes(data)
                        saved += 1
                        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
                        report.findings.append(Finding(target.name, type(exc).__name__ if not isinstance(
                            exc, _Slow) else f"hang over {PARSE_DEADLINE_S:.0f} s", f"{str(exc)[:200]} at "
                            f"{where.filename}:{where.lineno}" if where else str(exc)[:200], str(path)))
                finally:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                if i < len(target.seeds) and counts["refused"] + counts["finding"]:
                    report.findings.append(Finding(target.name, "seed refused", f"seed {i} is not accepted: the "
                                                   "campaign would only test the error path"))
            report.per_target[target.name] = counts
            report.seconds[target.name] = time.monotonic() - started
            if progress is not None:
                progress(f"{target.name}: {files_per_target} files in {report.seconds[target.name]:.1f} s")
    finally:
        if use_alarm and old is not None:
            signal.signal(signal.SIGALRM, old)
    return report


def _file_parser(workdir: Path, name: str, read: Callable[[Path], Any], mode: int = 0o600) -> Callable[[bytes], str]:
    """A parser that reads from a path: each input is written to one file in ``workdir`` first."""
    path = workdir / name
    path.parent.mkdir(parents=True, exist_ok=True)

    def parse(data: bytes) -> str:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        result = read(path)
        return "" if result is None else type(result).__name__.lower()

    return parse


def file_targets(workdir: Path) -> list[FileTarget]:
    """Every parser of a file FlightSeal reads, with valid seeds made by the real code (tests/factory)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from agent.audit import AuditLog, scan
    from agent.cli.keys import load_public
    from agent.cli.verify import read_measurements
    from agent.config import load as load_config
    from agent.gate.client import SequenceSource
    from agent.gate.key import load_gate_key
    from attest import dsse, jsonio
    from attest.evidence import ManifestRef, Predicate, statement
    from attest.keys import KeyKind
    from attest.manifest import Manifest
    from attest.models import Verdict
    from attest.trust import TrustedState
    from attest.verify import verify_attestation
    from hardware.software import SoftwareSigner, load_private_key
    from tests.factory import World, measurements
    from truststore.manifest_state import ManifestState
    from truststore.trustdir import TrustDir

    world = World()
    root_doc = world.root().to_json()
    root_bytes = world.root_bytes()
    trust = TrustedState(root_bytes)
    manifest = world.manifest()
    manifest_bytes = world.sign_manifest(manifest)
    device = world.device()
    nonce = bytes(range(32))
    ms = measurements()
    env = dsse.Envelope.from_bytes(manifest_bytes, "manifest")
    predicate = Predicate("drone-001", "FS-Quad-1", KeyKind.SOFTWARE, nonce, world.now,
                          ManifestRef(world_sha(env.payload), manifest.version), tuple(ms), Verdict(True))
    st = statement(predicate)
    attestation = dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, jsonio.dumps(st), [world.device_key]).to_bytes()

    def signed(payload_type: str, doc: Any, signers: list[SoftwareSigner]) -> Callable[[random.Random], bytes]:
        def make(rng: random.Random) -> bytes:
            payload = dump_json(rng, mutate_value(rng, doc))
            return dsse.sign(payload_type, payload, signers).to_bytes()
        return make

    def parse_attestation(data: bytes) -> str:
        r = verify_attestation(data, trust=trust, devices=[device], manifest_bytes=manifest_bytes, nonce=nonce,
                               now=world.now, policy=_software_policy())
        return "pass" if r.passed else "fail"

    def parse_root(data: bytes) -> str:
        state = TrustedState(data)
        jsonio.dumps(state.root.to_json())  # what `root show` and the verifier's records do with it
        return ""

    def parse_manifest(data: bytes) -> str:
        verified = trust.verify_manifest(data, world.now)
        again = Manifest.from_json(jsonio.loads(jsonio.dumps(verified.manifest.to_json()), "manifest", 1 << 24))
        if again != verified.manifest:
            raise AssertionError("an accepted manifest does not survive its own JSON round trip")
        return ""

    def parse_enrollment(data: bytes) -> str:
        record = trust.verify_enrollment(data)
        jsonio.dumps(record.to_json())
        return ""

    # files the agent and verifier keep state in
    state_seed = json.dumps({"version": 3, "sha256": "ab" * 32}).encode()
    clocks_seed = json.dumps({"drone-001": {"clock": 123456, "reset_count": 2, "restart_count": 0, "safe": True},
                              "drone-002": {"clock": 1, "reset_count": 0, "restart_count": 0, "safe": False}},
                             indent=1).encode()
    clocks_dir = workdir / "trust"
    audit_seed_path = workdir / "seed-audit.log"
    audit_seed_path.unlink(missing_ok=True)
    log = AuditLog(audit_seed_path)
    for i in range(4):
        log.append("attestation", {"why": f"start {i}", "verdict": {"passed": i % 2 == 0, "reasons": []},
                                   "manifest_version": 3, "envelope_sha256": "cd" * 32})
    audit_seed = audit_seed_path.read_bytes()
    audit_lines = [json.loads(line) for line in audit_seed.splitlines()]

    def structured_audit(rng: random.Random) -> bytes:
        from agent.audit import _record_hash

        recs = copy.deepcopy(audit_lines)
        i = rng.randrange(len(recs))
        mutated = mutate_value(rng, recs[i])
        if isinstance(mutated, dict) and rng.random() < 0.5:  # a record that chains: checked past its hash
            with contextlib.suppress(Exception):
                body = {k: v for k, v in mutated.items() if k != "hash"}
                mutated["hash"] = _record_hash(str(body.get("prev", "")), body)
        lines = [dump_json(rng, r) if j == i else json.dumps(r, separators=(",", ":")).encode()
                 for j, r in enumerate(recs)]
        if rng.random() < 0.3:
            rng.shuffle(lines)
        return b"\n".join(lines) + (b"\n" if rng.random() < 0.8 else b"")

    measurements_doc = [m.to_json() for m in ms]
    config_text = (Path(__file__).resolve().parents[1] / "packaging" / "agent.toml").read_bytes()
    config_doc = tomllib.loads(config_text.decode())

    # keys
    signer = SoftwareSigner.generate()
    p384 = ec.generate_private_key(ec.SECP384R1())
    edkey = ed25519.Ed25519PrivateKey.generate()
    nopass = serialization.NoEncryption()
    pem = serialization.Encoding.PEM
    private_seeds = [signer.private_pem(),
                     signer._key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, nopass),
                     p384.private_bytes(pem, serialization.PrivateFormat.PKCS8, nopass),
                     edkey.private_bytes(pem, serialization.PrivateFormat.PKCS8, nopass)]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    public_seeds = [signer.public_key.public_pem.encode(), p384.public_key().public_bytes(pem, spki),
                    edkey.public_key().public_bytes(pem, spki)]

    def structured_pem(seeds: list[bytes]) -> Callable[[random.Random], bytes]:
        import base64

        def make(rng: random.Random) -> bytes:
            text = rng.choice(seeds).decode()
            lines = text.strip().splitlines()
            der = bytearray(base64.b64decode("".join(lines[1:-1])))
            der = bytearray(mutate_bytes(rng, bytes(der), []))[:4096]
            body = base64.b64encode(bytes(der)).decode()
            wrapped = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
            return f"{lines[0]}\n{wrapped}\n{lines[-1]}\n".encode()
        return make

    sealed_seed = json.dumps({"format": "flightseal-tpm-sealed-v1", "tpm": "tpm:device:/nonexistent/tpm",
                              "public": "AAAA", "private": "AAAA"}).encode()
    accepted_private = {0, 1}

    def parse_private(path: Path) -> Any:
        return load_private_key(path)

    def seq_reader(path: Path) -> Any:
        return SequenceSource(path)

    keys_dir = workdir / "keys"
    targets = [
        FileTarget("attestation", "attestation envelope (attest.verify)", [attestation], parse_attestation,
                   signed(dsse.INTOTO_PAYLOAD_TYPE, st, [world.device_key])),
        FileTarget("root", "root.json (attest.trust.TrustedState)", [root_bytes], parse_root,
                   signed(dsse.ROOT_PAYLOAD_TYPE, root_doc, world.m_keys[:2])),
        FileTarget("manifest", "manifest.json (TrustedState.verify_manifest)", [manifest_bytes], parse_manifest,
                   signed(dsse.MANIFEST_PAYLOAD_TYPE, manifest.to_json(), world.m_keys[:2])),
        FileTarget("enrollment", "devices/*.json (attest.enrollment)", [world.enrollment_bytes(device)],
                   parse_enrollment, signed(dsse.DEVICE_PAYLOAD_TYPE, device.to_json(), world.m_keys[:2])),
        FileTarget("agent.toml", "agent.toml (agent.config.load)", [config_text],
                   _file_parser(workdir, "agent.toml", load_config),
                   lambda rng: dump_toml(rng, mutate_value(rng, config_doc))),
        FileTarget("manifest-state", "state.json, manifest-state.json, root-state.json (ManifestState)",
                   [state_seed], _file_parser(workdir, "state.json", lambda p: ManifestState(p).load()),
                   lambda rng: dump_json(rng, mutate_value(rng, json.loads(state_seed)))),
        FileTarget("clocks", "clocks.json (TrustDir.device_clocks)", [clocks_seed],
                   _file_parser(clocks_dir, "clocks.json", lambda _p: TrustDir(clocks_dir).device_clocks()),
                   lambda rng: dump_json(rng, mutate_value(rng, json.loads(clocks_seed)))),
        FileTarget("gate.seq", "gate.seq (agent.gate.client.SequenceSource)", [b"1234567\n"],
                   _file_parser(workdir / "seq", "gate.seq", seq_reader)),
        FileTarget("audit", "audit.log lines (agent.audit.scan)", [audit_seed],
                   _file_parser(workdir, "audit.log", scan), structured_audit),
        FileTarget("measurements", "attest --measurements FILE (read_measurements)",
                   [json.dumps(measurements_doc, indent=1).encode()],
                   _file_parser(workdir, "measurements.json", read_measurements),
                   lambda rng: dump_json(rng, mutate_value(rng, measurements_doc))),
        FileTarget("private-key", "PEM private key (hardware.software.load_private_key)",
                   [private_seeds[i] for i in sorted(accepted_private)],
                   _file_parser(keys_dir, "key.pem", parse_private), structured_pem(private_seeds)),
        FileTarget("public-key", "PEM public key (agent.cli.keys.load_public, attest.keys)", public_seeds[:1],
                   _file_parser(keys_dir, "key.pub", lambda p: load_public(str(p))), structured_pem(public_seeds)),
        FileTarget("gate.key", "gate.key, signing.key (agent.gate.key / agent.keyfiles)", [bytes(range(32))],
                   _file_parser(keys_dir, "gate.key", load_gate_key), lambda rng: mutate_bytes(rng, sealed_seed, [])),
    ]
    # the other encodings and curves are mutation material, not seeds that must be accepted
    extra_pool = private_seeds[2:] + public_seeds[1:] + [sealed_seed]
    for t in targets:
        if t.name in ("private-key", "public-key", "gate.key"):
            t.structured = _mixed(t.structured, extra_pool)
    return targets


def _mixed(structured: Callable[[random.Random], bytes] | None, extra: list[bytes]) -> Callable[[random.Random], bytes]:
    def make(rng: random.Random) -> bytes:
        if structured is None or rng.random() < 0.25:
            return mutate_bytes(rng, rng.choice(extra), extra) if rng.random() < 0.7 else rng.choice(extra)
        return structured(rng)
    return make


def world_sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _software_policy() -> Any:
    from attest.verify import VerifierPolicy

    return VerifierPolicy(allow_software_keys=True)


# ------------------------------------------------------------------------------------------ MAVLink frames

GATE_TUNNEL = 0xF5E2  # the gate's verdicts and acks (agent/gate/client.py)
CHALLENGE_TUNNEL = 0xF5E1  # operator challenges (agent/mavlink/challenge_wire.py)
AGENT_IDS = (1, 191)
FC_IDS = (1, 1)
MAV_TYPE_GCS = 6
GCS_POOL = [(255, 190), (254, 190), (255, 1), (250, 190), (246, 190), (255, 0), (200, 190), (253, 191)]
# Every message the agent's code looks at (grep get_type() in agent/): each gets random fields
TO_AGENT_TYPES = ["HEARTBEAT", "PARAM_VALUE", "STATUSTEXT", "TUNNEL", "FILE_TRANSFER_PROTOCOL", "COMMAND_ACK",
                  "AUTOPILOT_VERSION", "CAN_FRAME", "CANFD_FRAME", "TIMESYNC", "RADIO_STATUS"]
# Toward the FC only what cannot change the vehicle: a random COMMAND_LONG may reboot it, PARAM_SET retune it,
# SETUP_SIGNING lock everyone out, FTP delete the gate. That is an attacker who owns the FC, not a fuzz input;
# the gate only reads TUNNEL, which is there in every form.
TO_FC_DENIED = {"COMMAND_LONG", "COMMAND_INT", "PARAM_SET", "PARAM_REQUEST_LIST", "PARAM_REQUEST_READ",
                "PARAM_EXT_SET", "FILE_TRANSFER_PROTOCOL", "SETUP_SIGNING", "CAN_FILTER_MODIFY", "CAN_FRAME",
                "CANFD_FRAME", "REQUEST_DATA_STREAM", "MISSION_CLEAR_ALL", "SET_MODE", "MANUAL_CONTROL",
                "RC_CHANNELS_OVERRIDE", "SERIAL_CONTROL", "LOG_ERASE", "MISSION_ITEM", "MISSION_ITEM_INT",
                "MISSION_COUNT", "PARAM_MAP_RC", "SET_HOME_POSITION", "COMMAND_CANCEL"}
TO_FC_TYPES = ["TUNNEL", "HEARTBEAT", "STATUSTEXT", "TIMESYNC", "RADIO_STATUS", "AUTOPILOT_VERSION", "COMMAND_ACK"]
_BY_NAME = {cls.msgname: (msgid, cls) for msgid, cls in mavlink.mavlink_map.items()}
_OTHER_TO_FC = sorted(n for n in _BY_NAME if n not in TO_FC_DENIED and _BY_NAME[n][0] < 60000)
_OTHER_TO_AGENT = sorted(n for n in _BY_NAME if _BY_NAME[n][0] < 60000)
OPT_IN_KINDS = {"armed-spoof": "FC HEARTBEATs with the armed bit (the agent defers passes while 'armed')",
                "forgery": "verdicts and acks in the agent's and gate's names with a wrong MAC (posture-gate-forgery "
                           "until the FC reboots; the campaign reboots it at the end)"}


def _crc(data: bytes, extra: int) -> int:
    crc = mavlink.x25crc(data)
    crc.accumulate(bytes([extra]))
    return int(crc.crc)


def frame_v2(name: str, payload: bytes, src: tuple[int, int], seq: int, *, trim: bool = True,
             length: int | None = None) -> bytes:
    """A MAVLink2 frame with a correct CRC around any payload (random fields are random bytes)."""
    msgid, cls = _BY_NAME[name]
    body = payload.rstrip(b"\0") or b"\0" if trim else payload
    n = len(body) if length is None else length
    header = struct.pack("<BBBBBBBHB", 0xFD, n & 0xFF, 0, 0, seq & 0xFF, src[0], src[1], msgid & 0xFFFF, msgid >> 16)
    return header + body + struct.pack("<H", _crc(header[1:] + body, cls.crc_extra))


def frame_v1(name: str, payload: bytes, src: tuple[int, int], seq: int) -> bytes:
    msgid, cls = _BY_NAME[name]
    header = struct.pack("<BBBBBB", 0xFE, len(payload) & 0xFF, seq & 0xFF, src[0], src[1], msgid)
    return header + payload + struct.pack("<H", _crc(header[1:] + payload, cls.crc_extra))


def pending_bytes(stream: bytes) -> int:
    """How many more bytes a MAVLink parser reading ``stream`` from a frame boundary waits for.

    pymavlink (the agent) and ArduPilot read a frame's declared length before checking its CRC, so a
    truncated frame or a stray magic byte would swallow the next real frame. Hostile bytes are padded
    (with zeros, never a magic byte) up to this count: the receiver is back at a frame boundary when
    the next real frame starts, as the issue's campaign interleaved them ("at frame boundaries").
    """
    i, n = 0, len(stream)
    while i < n:
        if stream[i] not in (0xFD, 0xFE):
            i += 1
            continue
        head = stream[i:i + 3].ljust(3, b"\0")
        v2 = head[0] == 0xFD
        total = (10 if v2 else 6) + head[1] + 2 + (13 if v2 and head[2] & 1 else 0)
        if i + total > n:
            return i + total - n
        i += total
    return 0


def resync(data: bytes) -> bytes:
    return data + bytes(pending_bytes(data))


@dataclass
class Mix:
    """Which hostile frames go where. Weights per kind; pass triggers are rate-limited because each
    one makes the agent re-measure (that is their point, and a few are enough to prove it)."""

    to_agent: dict[str, int] = field(default_factory=lambda: {
        "random-bytes": 10, "bad-crc": 10, "truncated": 10, "mavlink1": 10, "oversized": 5, "valid-random": 25,
        "spoofed-fc": 15, "challenge": 5, "other-message": 10})
    to_fc: dict[str, int] = field(default_factory=lambda: {
        "random-bytes": 15, "bad-crc": 10, "truncated": 10, "mavlink1": 10, "oversized": 5, "valid-random": 20,
        "verdict-shaped": 15, "other-message": 15})
    pass_trigger_every_s: float = 15.0
    stranger_share: float = 0.0003  # frames to the agent from random ids (about one stranger in 30 s)
    opt_in: frozenset[str] = frozenset()


class Hostile:
    """Generates the hostile frames of one direction (``to-agent`` or ``to-fc``)."""

    def __init__(self, direction: str, mix: Mix, rng: random.Random, params: list[str]) -> None:
        self.direction = direction
        self.rng = rng
        weights = dict(mix.to_agent if direction == "to-agent" else mix.to_fc)
        if direction == "to-agent" and "armed-spoof" in mix.opt_in:
            weights["armed-spoof"] = 2
        if "forgery" in mix.opt_in:
            weights["forgery"] = 2
        self.kinds = list(weights)
        self.weights = list(weights.values())
        self.params = params
        self.trigger_every = mix.pass_trigger_every_s
        self._next_trigger = time.monotonic() + mix.pass_trigger_every_s
        self._next_challenge = 0.0
        self.stranger_share = mix.stranger_share
        self.seq = 0
        # the pool's ground stations say who they are before anything else, as MAVProxy or QGC do
        self._queue = [frame_v2("HEARTBEAT", struct.pack("<IBBBBB", 0, MAV_TYPE_GCS, 8, 0, 4, 3), src, 0)
                       for src in GCS_POOL] if direction == "to-agent" else []

    def _payload(self, name: str, src: tuple[int, int]) -> bytes:
        _, cls = _BY_NAME[name]
        body = bytearray(self.rng.randbytes(cls.unpacker.size))
        if name == "HEARTBEAT":
            body[6] &= 0x7F  # never the armed bit (opt-in kind "armed-spoof")
            if src != FC_IDS:
                body[4] = MAV_TYPE_GCS  # no new component each time: that is the rate-limited pass trigger
        elif name == "TUNNEL" and self.direction == "to-fc" and src == AGENT_IDS:
            body[0:2] = self.rng.randbytes(2) if self.rng.random() < 0.5 else b"\x00\x00"
        return bytes(body)

    def _src(self) -> tuple[int, int]:
        """Who a hostile frame claims to be. Toward the agent mostly ground stations (a router's other
        clients), which the agent rightly does not count as parts; a few from anyone at all, each of
        which is an unknown part until it has not been heard for 10 s (a fail, by design), so the agent
        also spends time in a pass the gate must keep alive."""
        r = self.rng.random()
        if self.direction == "to-fc":
            return AGENT_IDS if r < 0.3 else (self.rng.randint(0, 255), self.rng.randint(0, 255))
        if r < 0.1:
            return FC_IDS
        if r < 1.0 - self.stranger_share:
            return self.rng.choice(GCS_POOL)
        return (self.rng.randint(0, 255), self.rng.randint(0, 255))

    def _valid(self, types: list[str]) -> tuple[str, tuple[int, int], bytes]:
        name = self.rng.choice(types)
        src = self._src()
        if self.direction == "to-fc" and name == "TUNNEL" and src == AGENT_IDS:
            payload = self._payload(name, src)
            if payload[0:2] == struct.pack("<H", GATE_TUNNEL):
                payload = b"\x00\x00" + payload[2:]  # a verdict with a wrong MAC is the opt-in "forgery"
            return name, src, payload
        return name, src, self._payload(name, src)

    def next(self) -> tuple[str, bytes]:
        self.seq += 1
        if self._queue:
            return "valid-random", self._queue.pop(0)
        if self.direction == "to-agent" and time.monotonic() >= self._next_trigger:
            self._next_trigger = time.monotonic() + self.trigger_every
            return "pass-trigger", self._pass_trigger()
        kind = self.rng.choices(self.kinds, self.weights)[0]
        return kind, resync(self._make(kind))

    def _make(self, kind: str) -> bytes:
        rng = self.rng
        types = TO_AGENT_TYPES if self.direction == "to-agent" else TO_FC_TYPES
        if kind == "random-bytes":
            return rng.randbytes(rng.randint(1, 300))
        if kind in ("valid-random", "bad-crc", "truncated"):
            name, src, payload = self._valid(types)
            frame = bytearray(frame_v2(name, payload, src, self.seq, trim=rng.random() < 0.7))
            if kind == "bad-crc":
                frame[-rng.randint(1, 2)] ^= 1 << rng.randrange(8)
            elif kind == "truncated":
                frame = frame[:rng.randint(1, len(frame) - 1)]
            return bytes(frame)
        if kind == "other-message":
            name = rng.choice(_OTHER_TO_AGENT if self.direction == "to-agent" else _OTHER_TO_FC)
            return frame_v2(name, self._payload(name, self._src()) if name == "HEARTBEAT" else
                            rng.randbytes(_BY_NAME[name][1].unpacker.size), self._src(), self.seq)
        if kind == "mavlink1":
            v1 = [t for t in types if _BY_NAME[t][0] < 256]
            name, src, payload = self._valid(v1)
            _, cls = _BY_NAME[name]
            return frame_v1(name, payload[:cls.unpacker.size], src, self.seq)
        if kind == "oversized":  # a length field past the message's own size, CRC right over the garbage
            name, src, payload = self._valid(types)
            size = rng.randint(len(payload) + 1, 255) if len(payload) < 255 else 255
            if rng.random() < 0.5:
                return frame_v2(name, payload.ljust(size, b"\xaa"), src, self.seq, trim=False)
            body = payload.ljust(size, b"\x55")[:255]
            if _BY_NAME[name][0] < 256:
                return frame_v1(name, body, src, self.seq)
            return frame_v2(name, body, src, self.seq, trim=False)
        if kind == "spoofed-fc":
            name = rng.choice(types)
            return frame_v2(name, self._payload(name, FC_IDS), FC_IDS, self.seq)
        if kind == "challenge":
            return self._challenge()
        if kind == "verdict-shaped":
            return self._verdict_shaped()
        if kind == "armed-spoof":
            return frame_v2("HEARTBEAT", bytes(mavlink.MAVLink_heartbeat_message(2, 3, 81 | 128, 0, 4, 3).pack(
                mavlink.MAVLink(None, 1, 1))[10:-2]), FC_IDS, self.seq)
        if kind == "forgery":
            if self.direction == "to-fc":
                from agent.gate.client import MAGIC
                data = MAGIC + struct.pack("<B8siiB", 1, rng.randbytes(8), 2**31 - 1, 2**31 - 1, 0) + rng.randbytes(16)
                return self._tunnel(GATE_TUNNEL, data, AGENT_IDS, FC_IDS)
            from agent.gate.client import ACK_FORMAT, ACK_MAGIC
            body = struct.pack(ACK_FORMAT, ACK_MAGIC, 0, 3, 0, rng.randbytes(8), 1, 1, 2**31 - 1)
            return self._tunnel(GATE_TUNNEL, body + rng.randbytes(16), FC_IDS, AGENT_IDS)
        raise ValueError(kind)

    def _tunnel(self, ptype: int, data: bytes, src: tuple[int, int], target: tuple[int, int],
                length: int | None = None) -> bytes:
        payload = struct.pack("<HBBB", ptype, target[0], target[1], len(data) if length is None else length)
        return frame_v2("TUNNEL", payload + data[:128].ljust(128, b"\0"), src, self.seq)

    def _challenge(self) -> bytes:
        """Operator-challenge packets to the agent: mostly malformed; a valid one at most every 2 s (each
        makes the agent sign an attestation and stream it back, which is what an operator does)."""
        rng = self.rng
        src = self._src()
        src = GCS_POOL[0] if src == FC_IDS else src  # operators: ground stations, as the others
        if time.monotonic() >= self._next_challenge:
            self._next_challenge = time.monotonic() + 2.0
            nonce = rng.randbytes(rng.randint(16, 64))
            data = struct.pack("<BIB", 1, rng.getrandbits(32), len(nonce)) + nonce
        else:
            data = struct.pack("<BI", rng.randint(0, 7), rng.getrandbits(32)) + rng.randbytes(rng.randint(0, 123))
        return self._tunnel(CHALLENGE_TUNNEL, data, src, AGENT_IDS,
                            length=rng.choice([None, None, rng.randint(0, 255)]))

    def _verdict_shaped(self) -> bytes:
        """What the gate parses, wrong in one place each: a bad CRC from the agent's ids (ArduPilot hands
        those to scripts too), an inconsistent length, or someone else's ids. None is a verdict with the
        agent's ids, a right CRC and a wrong MAC: that is the opt-in "forgery"."""
        from agent.gate.client import MAGIC

        rng = self.rng
        tlen = rng.randint(0, 41)
        data = MAGIC + struct.pack("<B8siiB", rng.randint(0, 3), rng.randbytes(8), rng.getrandbits(31),
                                   rng.getrandbits(31), tlen) + rng.randbytes(tlen) + rng.randbytes(16)
        way = rng.randrange(3)
        if way == 0:
            frame = bytearray(self._tunnel(GATE_TUNNEL, data, AGENT_IDS, FC_IDS))
            frame[-1] ^= 0xFF
            return bytes(frame)
        if way == 1:
            bad = rng.choice([0, 5, len(data) - 1, len(data) + 1, 124, 127, 128, 200, 255])
            return self._tunnel(GATE_TUNNEL, data, AGENT_IDS, FC_IDS, length=bad)
        return self._tunnel(GATE_TUNNEL, data, (rng.randint(2, 255), rng.randint(0, 255)), FC_IDS)

    def _pass_trigger(self) -> bytes:
        """What starts a pass cheaply (issue 11): a component never heard, or the FC "changing" a
        parameter. The pass re-measures the truth and passes again; the gate must never lapse meanwhile."""
        rng = self.rng
        if rng.random() < 0.5 or not self.params:
            src = (rng.randint(2, 250), rng.randint(1, 250))
            hb = mavlink.MAVLink_heartbeat_message(rng.choice([1, 2, 26, 30]), 8, 0, 0, 4, 3)
            return frame_v2("HEARTBEAT", bytes(hb.pack(mavlink.MAVLink(None, *src))[10:-2]), src, self.seq)
        name = rng.choice(self.params)
        pv = mavlink.MAVLink_param_value_message(name.encode(), rng.uniform(-1e6, 1e6), 9, 1000, 0xFFFF)
        return frame_v2("PARAM_VALUE", bytes(pv.pack(mavlink.MAVLink(None, *FC_IDS))[10:-2]), FC_IDS, self.seq)


class _Framer:
    """Splits one direction of the real byte stream into whole MAVLink frames, so hostile frames go in
    only between two of them."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while self.buf:
            if self.buf[0] not in (0xFD, 0xFE):
                cut = next((i for i, b in enumerate(self.buf) if b in (0xFD, 0xFE)), len(self.buf))
                out.append(bytes(self.buf[:cut]))
                del self.buf[:cut]
                continue
            if len(self.buf) < 3:
                break
            v2 = self.buf[0] == 0xFD
            total = (10 if v2 else 6) + self.buf[1] + 2 + (13 if v2 and self.buf[2] & 1 else 0)
            if len(self.buf) < total:
                break
            out.append(bytes(self.buf[:total]))
            del self.buf[:total]
        return out


@dataclass
class LinkWatch:
    """What the relay saw of the real traffic: the agent's verdicts, the gate's MAC-checked acks."""

    verdicts_sent: Counter[str] = field(default_factory=Counter)
    acks: Counter[str] = field(default_factory=Counter)  # accepted pass / accepted fail / stale / denied / ...
    last_accepted: str = ""
    last_accepted_at: float = 0.0
    first_pass_at: float | None = None
    last_verdict_at: float | None = None
    last_heartbeat_at: float | None = None
    max_verdict_gap: float = 0.0
    max_heartbeat_gap: float = 0.0
    connections: int = 0
    _kinds: dict[tuple[int, int], str] = field(default_factory=dict)

    def reset_gaps(self) -> None:
        self.last_verdict_at = self.last_heartbeat_at = None
        self.max_verdict_gap = self.max_heartbeat_gap = 0.0


class Interposer:
    """A TCP relay between the agent and the FC's companion port that adds hostile frames both ways.

    Real frames pass whole and in order; hostile ones are written between them, at ``rate`` frames a
    second per direction (token bucket). One thread, one selector: nothing here can hold the link up
    for longer than a socket send's timeout.
    """

    def __init__(self, upstream_port: int, gate_key: bytes, hostile: dict[str, Hostile]) -> None:
        self.upstream_port = upstream_port
        self.gate_key = gate_key
        self.hostile = hostile
        self.rates = {"to-agent": 0.0, "to-fc": 0.0}
        self.budget = 0
        self.sent: Counter[tuple[str, str]] = Counter()
        self.watch = LinkWatch()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._run, name="fuzz-interposer", daemon=True)
        self._parser = mavlink.MAVLink(None, 255, 0)
        self._parser.robust_parsing = True
        self.error = ""

    @property
    def url(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def start(self) -> Interposer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def inject(self, frames: int, rate_to_agent: float, rate_to_fc: float) -> None:
        with self.lock:
            self.budget = frames
            self.rates = {"to-agent": rate_to_agent, "to-fc": rate_to_fc}

    @property
    def injected(self) -> int:
        with self.lock:
            return sum(self.sent.values())

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._listener.settimeout(0.2)
                try:
                    agent, _ = self._listener.accept()
                except TimeoutError:
                    continue
                upstream = self._connect_upstream()
                if upstream is None:
                    agent.close()
                    continue
                with self.lock:
                    self.watch.connections += 1
                    self.watch.reset_gaps()
                self._relay(agent, upstream)
        except Exception as exc:
            self.error = "".join(traceback.format_exception(exc))[-2000:]

    def _connect_upstream(self) -> socket.socket | None:
        deadline = time.monotonic() + 10.0  # the FC may be rebooting (its ports reopen within a second)
        while time.monotonic() < deadline and not self._stop.is_set():
            with contextlib.suppress(OSError):
                return socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1.0)
            time.sleep(0.1)
        return None

    def _relay(self, agent: socket.socket, fc: socket.socket) -> None:
        for s in (agent, fc):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(2.0)
        sel = selectors.DefaultSelector()
        framers = {"to-fc": _Framer(), "to-agent": _Framer()}
        sel.register(agent, selectors.EVENT_READ, ("to-fc", fc))
        sel.register(fc, selectors.EVENT_READ, ("to-agent", agent))
        dest = {"to-fc": fc, "to-agent": agent}
        tokens = {"to-agent": 0.0, "to-fc": 0.0}
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.005):
                    direction, out = key.data
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    for frame in framers[direction].feed(data):
                        self._observe(direction, frame)
                        out.sendall(frame)
                now = time.monotonic()
                dt, last = now - last, now
                for direction in ("to-agent", "to-fc"):
                    with self.lock:
                        rate, left = self.rates[direction], self.budget
                    if rate <= 0 or left <= 0:
                        tokens[direction] = 0.0
                        continue
                    tokens[direction] = min(tokens[direction] + rate * dt, 1.0 + rate * 0.02)
                    while tokens[direction] >= 1.0:
                        tokens[direction] -= 1.0
                        kind, frame = self.hostile[direction].next()
                        dest[direction].sendall(frame)
                        with self.lock:
                            self.sent[(direction, kind)] += 1
                            self.budget -= 1
        except OSError:
            return
        finally:
            sel.close()
            agent.close()
            fc.close()

    def _observe(self, direction: str, frame: bytes) -> None:
        """Note the agent's verdicts and heartbeats, and the gate's acks (MAC checked with the gate key)."""
        if len(frame) < 12 or frame[0] != 0xFD:
            return
        src = (frame[5], frame[6])
        msgid = frame[7] | frame[8] << 8 | frame[9] << 16
        now = time.monotonic()
        w = self.watch
        if direction == "to-fc" and src == AGENT_IDS and msgid == 0:
            with self.lock:
                if w.last_heartbeat_at is not None:
                    w.max_heartbeat_gap = max(w.max_heartbeat_gap, now - w.last_heartbeat_at)
                w.last_heartbeat_at = now
            return
        if msgid != 385:
            return
        try:
            msg = self._parser.decode(bytearray(frame))
        except Exception:
            return
        if msg.payload_type != GATE_TUNNEL:
            return
        data = bytes(msg.payload[:int(msg.payload_length)])
        with self.lock:
            if direction == "to-fc" and src == AGENT_IDS and data.startswith(b"FSV3") and len(data) >= 22:
                kind = "pass" if data[4] == 1 else "fail"
                epoch, counter = struct.unpack_from("<ii", data, 13)
                w._kinds[(epoch, counter)] = kind
                while len(w._kinds) > 256:
                    w._kinds.pop(next(iter(w._kinds)))
                w.verdicts_sent[kind] += 1
                if w.last_verdict_at is not None:
                    w.max_verdict_gap = max(w.max_verdict_gap, now - w.last_verdict_at)
                w.last_verdict_at = now
            elif direction == "to-agent" and src == FC_IDS:
                from agent.gate.client import ACCEPTED, decode_ack

                try:
                    ack = decode_ack(msg, self.gate_key)
                except FlightSealError:
                    return  # a forged ack (only the opt-in kind makes them; they do not come from the FC)
                if ack is None:
                    return
                kind = w._kinds.get((ack.sequence.epoch, ack.sequence.counter), "?")
                if ack.result == ACCEPTED:
                    w.acks[f"accepted {kind}"] += 1
                    w.last_accepted, w.last_accepted_at = kind, now
                    if kind == "pass" and w.first_pass_at is None:
                        w.first_pass_at = now
                else:
                    w.acks[{1: "stale", 2: "denied", 4: "failed"}.get(ack.result, f"result {ack.result}")] += 1


# ------------------------------------------------------------------------------------------ the agent


class AgentProcess:
    """``flightseal agent run`` as a child process: its output read continuously (a full pipe would
    block the agent), tracebacks and verdict lines kept, its RSS read from /proc."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.cmd = [sys.executable, "-m", "agent", "agent", "run", "--config", str(config)]
        self.workdir = workdir
        self.proc: subprocess.Popen[str] | None = None
        self.tail: deque[str] = deque(maxlen=200)
        self.tracebacks: list[str] = []
        self.lines = 0
        self.verdict_lines: Counter[str] = Counter()
        self._reader: threading.Thread | None = None

    def start(self) -> AgentProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", cwd=self.workdir)
        self._reader = threading.Thread(target=self._read, name="agent-output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        capture = 0
        for line in self.proc.stdout:
            self.lines += 1
            self.tail.append(line.rstrip())
            if "Traceback (most recent call last)" in line or "Exception in thread" in line:
                capture = 40
            if capture and len(self.tracebacks) < 400:
                self.tracebacks.append(line.rstrip())
                capture -= 1
            if "verdict PASS" in line:
                self.verdict_lines["PASS"] += 1
            elif "verdict FAIL" in line:
                self.verdict_lines["FAIL"] += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, as systemd stops it; SIGKILL if it does not stop within ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                return None
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode


def _watched_fc_class() -> type[Any]:
    from sim.vfc.server import VirtualFC

    class WatchedFC(VirtualFC):
        """The virtual FC, noting every "FlightSeal: …" text the gate sends, with its time."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.gate_texts: deque[tuple[float, str]] = deque(maxlen=100_000)

        def _text(self, severity: int, text: str) -> None:
            if text.startswith("FlightSeal"):
                self.gate_texts.append((time.monotonic(), text))
            super()._text(severity, text)

    return WatchedFC


# RSS: the agent's bounded structures (256 heard components of 64 message types, a bounded challenge outbox,
# 16 unanswered verdicts) hold well under a megabyte; what else RSS does after warm-up is the allocator
# settling. A leak per frame shows as growth that goes on: so growth from warm-up (first 20% of the frames)
# to the end is bounded, and so is the growth over the last half, which must not be most of it.
RSS_MAX_GROWTH_KIB = 12 * 1024
RSS_MAX_LATE_GROWTH_KIB = 4 * 1024
HANG_S = 5.0  # keep-alives every 1 s, an ack wait of 1 s: 5 s without a verdict or a heartbeat is a hang
SETTLE_S = 120.0  # after the flood: components heard once age out (10 s), a last pass runs


@dataclass
class FrameReport:
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: float = 0.0
    rss_kib: dict[str, int] = field(default_factory=dict)
    watch: LinkWatch = field(default_factory=LinkWatch)
    gate_texts: Counter[str] = field(default_factory=Counter)
    agent_verdicts: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        rows = []
        kinds = sorted({k for _, k in self.sent})
        for kind in kinds:
            a, f = self.sent[("to-agent", kind)], self.sent[("to-fc", kind)]
            rows.append((kind, str(a), str(f), str(a + f)))
        ta = sum(v for (d, _), v in self.sent.items() if d == "to-agent")
        tf = sum(v for (d, _), v in self.sent.items() if d == "to-fc")
        rows.append(("total", str(ta), str(tf), str(ta + tf)))
        total = ta + tf
        out = [table(f"hostile frames ({total} in {self.seconds:.0f} s, {total / max(self.seconds, 1e-9):.0f}/s)",
                     rows, ("kind", "to agent", "to FC/gate", "total"))]
        w = self.watch
        facts = [("RSS at start / after warm-up / end / max (MiB)", " / ".join(
                     f"{self.rss_kib.get(k, 0) / 1024:.1f}" for k in ("start", "warm", "end", "max"))),
                 ("agent passes (verdict lines PASS / FAIL)",
                  f"{self.agent_verdicts['PASS']} / {self.agent_verdicts['FAIL']}"),
                 ("verdicts sent (pass / fail)", f"{w.verdicts_sent['pass']} / {w.verdicts_sent['fail']}"),
                 ("gate acks", ", ".join(f"{k} {v}" for k, v in sorted(w.acks.items())) or "none"),
                 ("max gap between verdicts / heartbeats (s)", f"{w.max_verdict_gap:.2f} / {w.max_heartbeat_gap:.2f}"),
                 ("link connections", str(w.connections)),
                 ("gate texts", ", ".join(f"{k!r} {v}" for k, v in sorted(self.gate_texts.items())) or "none")]
        out.append(table("agent and gate", facts, ("what", "value")))
        return "\n\n".join(out)


def run_frame_campaign(workdir: Path, frames: int, *, rate: float = 450.0, seed: int = 11, mix: Mix | None = None,
                       progress: Callable[[str], None] | None = None) -> FrameReport:
    """``frames`` hostile frames at a running agent, then the checks of issue 11 (see module docstring)."""
    from hardware.software import SoftwareSigner, write_private_key
    from sim.scenarios.rig import GATE_KEY, Gcs, Rig, gate_scripts
    from sim.vfc.config import VfcConfig
    from sim.vfc.lua_host import LuaScriptingAuthority

    say = progress or (lambda _s: None)
    mix = mix or Mix()
    report = FrameReport()
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "device.pem"
    signer = SoftwareSigner.generate()
    if not key.exists():
        write_private_key(key, signer)
    fc_class = _watched_fc_class()
    image = b"fuzz campaign image " * 1000
    with fc_class(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=image),
                  authority=LuaScriptingAuthority()) as fc:
        rig = Rig(workdir / "rig", fc.url(1), fc.url(0), signer, gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        params = [p for p in ("RTL_ALT", "ARMING_CHECK", "FS_THR_ENABLE") if fc.get_param(p) is not None]
        rng = random.Random(seed)
        hostile = {d: Hostile(d, mix, random.Random(rng.getrandbits(64)), params) for d in ("to-agent", "to-fc")}
        relay = Interposer(fc.ports[1], GATE_KEY, hostile).start()
        rig.fc_url = relay.url
        agent = AgentProcess(rig.write_config_file(f"file:{key}"), workdir).start()
        try:
            _campaign(report, fc, rig, relay, agent, frames, rate, mix, say)
            _settle_and_arm(report, fc, rig, relay, agent, Gcs, mix, say)
        finally:
            code = agent.stop()
            relay.stop()
            report.sent = Counter(relay.sent)
            report.watch = relay.watch
            report.agent_verdicts = agent.verdict_lines
            report.gate_texts = Counter(t for _, t in fc.gate_texts)
            if code != 0:
                report.findings.append(Finding("agent", "did not stop cleanly on SIGTERM", f"exit code {code}; "
                                               "last output:\n" + "\n".join(list(agent.tail)[-20:])))
            if agent.tracebacks:
                report.findings.append(Finding("agent", "traceback in its output", "\n".join(agent.tracebacks[:60])))
            if relay.error:
                report.findings.append(Finding("campaign", "the relay failed", relay.error))
    return report


def _campaign(report: FrameReport, fc: Any, rig: Any, relay: Interposer, agent: AgentProcess, frames: int,
              rate: float, mix: Mix, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + 120
    while relay.watch.first_pass_at is None:
        if not agent.alive() or time.monotonic() > deadline:
            raise AssertionError("the agent never delivered a first pass before the campaign: "
                                 + "\n".join(list(agent.tail)[-30:]))
        time.sleep(0.2)
    say(f"first pass accepted by the gate; RSS {agent.rss_kib()} KiB; sending {frames} hostile frames at {rate:.0f}/s")
    report.rss_kib["start"] = agent.rss_kib() or 0
    with relay.lock:
        relay.watch.reset_gaps()
    relay.inject(frames, rate * 2 / 3, rate / 3)
    started = time.monotonic()
    stop_at = started + frames / rate * 3 + 120  # bounded whatever happens
    rss_max = 0
    samples: list[tuple[int, int]] = []
    next_say = started + 30
    seen_texts = 0
    while relay.injected < frames:
        now = time.monotonic()
        if now > stop_at:
            report.findings.append(Finding("campaign", "hang", f"only {relay.injected} of {frames} frames sent by "
                                           f"{stop_at - started:.0f} s (the relay or the link is stuck)"))
            break
        if not agent.alive():
            code = agent.proc.returncode if agent.proc else "?"
            report.findings.append(Finding("agent", "crash", f"exited with {code} after {relay.injected} frames:\n"
                                           + "\n".join(list(agent.tail)[-30:])))
            break
        rss = agent.rss_kib() or 0
        rss_max = max(rss_max, rss)
        samples.append((relay.injected, rss))
        if "warm" not in report.rss_kib and relay.injected >= frames * 0.2:
            report.rss_kib["warm"] = rss
        seen_texts = _check_texts(report, fc, seen_texts)
        _check_gaps(report, relay)
        if now >= next_say:
            next_say = now + 30
            say(f"{relay.injected}/{frames} frames, RSS {rss / 1024:.1f} MiB, acks {dict(relay.watch.acks)}")
        time.sleep(0.25)
    relay.inject(0, 0.0, 0.0)
    report.seconds = time.monotonic() - started
    _check_gaps(report, relay)
    _check_texts(report, fc, seen_texts)
    report.rss_kib["end"] = agent.rss_kib() or 0
    report.rss_kib["max"] = max(rss_max, report.rss_kib["end"])
    report.rss_kib.setdefault("warm", report.rss_kib["start"])
    _check_rss(report, samples, frames)


def _check_texts(report: FrameReport, fc: Any, seen: int) -> int:
    texts = list(fc.gate_texts)
    for _at, text in texts[seen:]:
        if text.startswith(("FlightSeal: verdict lapsed", "FlightSeal: gate error", "FlightSeal: bad verdict")):
            report.findings.append(Finding("gate", text, "the gate took a pass and then let it lapse, or broke: a "
                                           "pass may end only by the agent's fail verdict" if "lapsed" in text else
                                           "the gate script failed or took a malformed verdict"))
    return len(texts)


def _check_gaps(report: FrameReport, relay: Interposer) -> None:
    w = relay.watch
    for what, gap in (("verdict", w.max_verdict_gap), ("heartbeat", w.max_heartbeat_gap)):
        if gap > HANG_S and not any(f.what == f"hang: no {what}" for f in report.findings):
            report.findings.append(Finding("agent", f"hang: no {what}", f"{gap:.1f} s without one (bound {HANG_S} s)"))


def _check_rss(report: FrameReport, samples: list[tuple[int, int]], frames: int) -> None:
    warm, end = report.rss_kib["warm"], report.rss_kib["end"]
    half = [rss for n, rss in samples if n >= frames * 0.6]
    late = end - half[0] if half else 0
    report.notes.append(f"RSS growth after warm-up {(end - warm) / 1024:.1f} MiB, over the last 40% "
                        f"{late / 1024:.1f} MiB")
    if end - warm > RSS_MAX_GROWTH_KIB:
        report.findings.append(Finding("agent", "memory growth", f"RSS grew {(end - warm) / 1024:.1f} MiB after "
                                       f"warm-up (bound {RSS_MAX_GROWTH_KIB / 1024:.0f} MiB)"))
    if late > RSS_MAX_LATE_GROWTH_KIB:
        report.findings.append(Finding("agent", "memory growth", f"RSS still grew {late / 1024:.1f} MiB over the "
                                       f"last 40% of the frames (bound {RSS_MAX_LATE_GROWTH_KIB / 1024:.0f} MiB)"))


def _settle_and_arm(report: FrameReport, fc: Any, rig: Any, relay: Interposer, agent: AgentProcess,
                    gcs_class: Any, mix: Mix, say: Callable[[str], None]) -> None:
    """After the flood: the agent's verdict becomes a pass again (a spoofed part ages out; if a spoof
    left a fail standing, a touched manifest starts a pass, as an operator would), the gate still takes
    its verdicts (no wedge), and a ground station arms."""
    if "forgery" in mix.opt_in:
        say("rebooting the FC: the forged verdicts' posture-gate-forgery lasts until then")
        fc.reboot()
    deadline = time.monotonic() + SETTLE_S
    touch_at = time.monotonic() + 30
    touches = 0
    while time.monotonic() < deadline and agent.alive():
        w = relay.watch
        with relay.lock:
            fresh = w.last_accepted == "pass" and time.monotonic() - w.last_accepted_at < 2.0
        if fresh:
            break
        if time.monotonic() >= touch_at:
            touch_at = time.monotonic() + 30
            touches += 1
            os.utime(rig.manifest_path)  # "manifest file changed": a new pass, by the agent's own rule
        time.sleep(0.2)
    else:
        report.findings.append(Finding("agent", "no pass after the campaign", f"last accepted verdict "
                                       f"{relay.watch.last_accepted!r} within {SETTLE_S:.0f} s; output:\n"
                                       + "\n".join(list(agent.tail)[-30:])))
        return
    if not agent.alive():
        return
    report.notes.append(f"manifest touched {touches} time(s) to end a fail a spoof had left standing")
    before = sum(relay.watch.acks.values())
    time.sleep(4.0)
    after = sum(relay.watch.acks.values())
    if after - before < 2:
        report.findings.append(Finding("gate", "sequence wedge", f"{after - before} acks in 4 s after the campaign "
                                       "(keep-alives every 1 s): the gate no longer takes the agent's verdicts"))
    gcs = gcs_class(fc.url(0))
    try:
        result = None
        arm_deadline = time.monotonic() + 20
        while time.monotonic() < arm_deadline:
            result = gcs.arm()
            if result.accepted:
                gcs.disarm()
                break
            time.sleep(0.5)
        report.notes.append(f"ground station arming after the campaign: {result}")
        if result is None or not result.accepted:
            report.findings.append(Finding("gate", "cannot arm after the campaign", f"{result}, although the "
                                           "agent's verdict is a pass"))
    finally:
        gcs.close()
