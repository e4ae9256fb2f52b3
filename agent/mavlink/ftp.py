"""A small, bounded MAVLink FTP client for the agent's measurements.

Why not ``pymavlink.mavftp.MAVFTP``: measured against the virtual FC and the SITL captures, it
completes a failed operation only by idle detection (3.7 s per missing file or CalcFileCRC32),
does not return the CRC it asked for, and aborts 239-byte bursts on a paced 921,600-baud link
because a 500-packet burst outlasts its idle timer. See docs/adr/0006-own-mavlink-ftp-client.md.

What this client guarantees:

* every wait is bounded (per-reply timeout × retries; a stalled burst is re-requested a bounded
  number of times); a retry repeats the request's ``seq`` so ArduPilot resends its last reply;
* reads are bounded by the caller's ``max_bytes``, never by the size the FC reports (virtual
  files report 100000 or an estimate); an FC that sends more fails the read with a clear error;
* one read size per open file (ArduPilot's ``param.pck`` refuses others), gaps are filled with
  ReadFile at the burst's packet offsets;
* errors carry the FTP error code and the path: ``FileNotFound`` is :class:`FtpNotFound`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.mavlink.ftpwire import MAX_DATA, FtpErr, FtpPacket, Op, error_name
from agent.mavlink.link import Link, LinkError

Progress = Callable[[int, int | None], None]


class FtpError(LinkError):
    """An FTP operation failed; ``code`` is the FTP error code, None for a timeout."""

    def __init__(self, op: str, path: str, code: int | None, detail: str = "") -> None:
        self.op = op
        self.path = path
        self.code = code
        what = "no reply from the flight controller" if code is None else f"FTP error {error_name(code)}"
        super().__init__(f"MAVLink FTP {op} {path}: {what}{': ' + detail if detail else ''}")


class FtpNotFound(FtpError):
    """The file or directory does not exist on the FC."""


class FtpTooLarge(FtpError):
    """The FC sent more bytes than the caller's bound."""


@dataclass(frozen=True)
class FtpLimits:
    reply_timeout: float = 1.0  # one request → reply wait
    retries: int = 3
    burst_size: int = MAX_DATA  # bytes per burst packet (ArduPilot allows up to 239)
    burst_stall: float = 1.0  # no burst packet this long → ask again from the first missing byte
    burst_restarts: int = 5
    max_list_entries: int = 4096
    busy_wait: float = 3.5  # ArduPilot frees a file left open by another session after 3 s idle
    terminate_timeout: float = 5.0


@dataclass(frozen=True)
class FtpEntry:
    name: str
    is_dir: bool
    size: int = 0


def _entries(body: bytes) -> list[str]:
    return [part.decode("latin-1") for part in body.split(b"\0") if part]


class FtpClient:
    """MAVLink FTP (ArduPilot's server) over a :class:`~agent.mavlink.link.Link`: list, read with
    bursts, CRC32, within :class:`FtpLimits`.

    Raises (from every operation):
        FtpNotFound: the path does not exist on the FC.
        FtpError: the FC answered with an error, or did not answer in time.
        LinkLost: the link dropped mid-transfer."""

    def __init__(self, link: Link, limits: FtpLimits | None = None, target: tuple[int, int] | None = None) -> None:
        self.link = link
        self.limits = limits or FtpLimits()
        self.target = target or link.fc
        self._seq = 0
        self._session = 0
        if not 1 <= self.limits.burst_size <= MAX_DATA:
            raise ValueError(f"burst size must be 1..{MAX_DATA}")

    # ---- plumbing
    def _send(self, packet: FtpPacket) -> None:
        tsys, tcomp = self.target
        self.link.send(self.link.mav.file_transfer_protocol_encode(0, tsys, tcomp, packet.pack()))

    def _ours(self, msg: Any) -> bool:
        return (msg.target_system == self.link.config.system_id
                and msg.target_component == self.link.config.component_id
                and (msg.get_srcSystem(), msg.get_srcComponent()) == self.target)

    def _next(self, timeout: float) -> FtpPacket | None:
        msg = self.link.recv(["FILE_TRANSFER_PROTOCOL"], timeout, self._ours)
        return None if msg is None else FtpPacket.unpack(msg.payload)

    def _request(self, opcode: int, *, path: str = "", data: bytes = b"", offset: int = 0, size: int | None = None,
                 what: str = "") -> FtpPacket:
        """Send one request and return its reply (ACK or NAK); retries repeat the same ``seq``."""
        body = data or path.encode("latin-1")
        if len(body) > MAX_DATA:
            raise FtpError(what or Op(opcode).name, path, FtpErr.INVALID_DATA_SIZE, "path too long")
        req = FtpPacket(self._seq, self._session, opcode, len(body) if size is None else size, offset=offset,
                        data=body)
        for _ in range(max(1, self.limits.retries)):
            self._send(req)
            deadline = time.monotonic() + self.limits.reply_timeout
            while (remaining := deadline - time.monotonic()) > 0:
                reply = self._next(remaining)
                if reply is None:
                    break
                if (reply.req_opcode == opcode and reply.session == req.session
                        and reply.seq == (req.seq + 1) & 0xFFFF):
                    self._seq = (reply.seq + 1) & 0xFFFF
                    return reply
        raise FtpError(what or Op(opcode).name.lower(), path, None,
                       f"{self.limits.retries} tries of {self.limits.reply_timeout:.1f} s")

    def _check(self, reply: FtpPacket, op: str, path: str) -> FtpPacket:
        if reply.opcode == Op.ACK:
            return reply
        code = reply.error if reply.error is not None else FtpErr.FAIL
        detail = f"errno {reply.body[1]}" if code == FtpErr.FAIL_ERRNO and reply.size >= 2 else ""
        cls = FtpNotFound if code == FtpErr.FILE_NOT_FOUND else FtpError
        raise cls(op, path, code, detail)

    def _new_session(self) -> None:
        self._session = (self._session + 1) & 0xFF

    def _terminate(self) -> None:
        """Close our session; stale burst packets may still arrive first (the FC finishes its burst)."""
        req = FtpPacket(self._seq, self._session, Op.TERMINATE_SESSION)
        self._send(req)
        deadline = time.monotonic() + self.limits.terminate_timeout
        resent = time.monotonic()
        while (remaining := deadline - time.monotonic()) > 0:
            reply = self._next(min(remaining, self.limits.reply_timeout))
            if reply is None:
                if time.monotonic() - resent >= self.limits.reply_timeout:
                    # a new seq: the FC must not take this for a repeat of an unseen earlier request
                    req.seq = (req.seq + 1) & 0xFFFF
                    self._send(req)
                    resent = time.monotonic()
                continue
            resent = time.monotonic()
            if reply.req_opcode == Op.TERMINATE_SESSION and reply.session == req.session:
                self._seq = (reply.seq + 1) & 0xFFFF
                return

    # ---- operations
    def reset_sessions(self) -> None:
        self._check(self._request(Op.RESET_SESSIONS, what="reset"), "reset", "")

    def list_dir(self, path: str) -> list[FtpEntry]:
        out: list[FtpEntry] = []
        offset = 0
        while True:
            reply = self._request(Op.LIST_DIRECTORY, path=path, offset=offset, what="list")
            if reply.opcode == Op.NAK and reply.error == FtpErr.EOF:
                return out
            self._check(reply, "list", path)
            texts = _entries(reply.body)
            if not texts:
                return out
            for text in texts:
                if text[0] == "D":
                    out.append(FtpEntry(text[1:], True))
                elif text[0] == "F":
                    name, _, size = text[1:].rpartition("\t")
                    if not name or not size.isdigit():
                        raise FtpError("list", path, FtpErr.INVALID_DATA_SIZE, f"malformed entry {text!r}")
                    out.append(FtpEntry(name, False, int(size)))
            offset += len(texts)
            if offset > self.limits.max_list_entries:
                raise FtpError("list", path, None, f"more than {self.limits.max_list_entries} entries")

    def crc32(self, path: str) -> int:
        reply = self._check(self._request(Op.CALC_FILE_CRC32, path=path, what="crc32"), "crc32", path)
        if reply.size != 4:
            raise FtpError("crc32", path, FtpErr.INVALID_DATA_SIZE, f"{reply.size}-byte answer")
        return int.from_bytes(reply.body, "little")

    def _open(self, opcode: int, path: str, op: str) -> FtpPacket:
        self._new_session()
        reply = self._request(opcode, path=path, what=op)
        if reply.opcode == Op.NAK and reply.error in (FtpErr.FAIL, FtpErr.INVALID_SESSION):
            # A file is still open on the FC: another link's (InvalidSession while it is active), or
            # one of ours from an aborted operation (Fail). ArduPilot frees it after 3 s without traffic.
            self._terminate()
            self.link.recv(["NONE"], self.limits.busy_wait)  # wait, still heartbeating
            self._new_session()
            reply = self._request(opcode, path=path, what=op)
        return self._check(reply, op, path)

    def read_file(self, path: str, max_bytes: int, progress: Progress | None = None) -> bytes:
        """The whole file, at most ``max_bytes`` (more is :class:`FtpTooLarge`)."""
        opened = self._open(Op.OPEN_FILE_RO, path, "read")
        reported = int.from_bytes(opened.body[:4], "little") if opened.size >= 4 else None
        try:
            return self._burst_read(path, max_bytes, reported, progress)
        finally:
            self._terminate()

    def _burst_read(self, path: str, max_bytes: int, reported: int | None, progress: Progress | None) -> bytes:
        size = self.limits.burst_size
        chunks: dict[int, bytes] = {}
        have = 0
        end: int | None = None  # file size once EOF is known
        restarts = 0
        burst_from = 0
        self._send_burst(burst_from)
        last_packet = time.monotonic()
        while True:
            reply = self._next(min(0.2, self.limits.burst_stall))
            ours = reply is not None and reply.session == self._session and reply.req_opcode == Op.BURST_READ_FILE
            if reply is None or not ours or (reply.opcode != Op.NAK and reply.offset in chunks):
                # nothing new: no packet, someone else's, or one we have (repeats do not count as progress)
                if time.monotonic() - last_packet < self.limits.burst_stall:
                    continue
                restarts += 1
                if restarts > self.limits.burst_restarts:
                    raise FtpError("read", path, None, f"burst stalled after {have} bytes")
                burst_from = self._first_missing(chunks, size)
                self._send_burst(burst_from)
                last_packet = time.monotonic()
                continue
            self._seq = (reply.seq + 1) & 0xFFFF  # never reuse a seq the FC may take for a repeat
            if reply.opcode == Op.NAK:
                if reply.error != FtpErr.EOF:
                    self._check(reply, "read", path)
                # After a short last packet the EOF NAK's offset is the file size; after a full one it
                # is that packet's offset (ArduPilot's quirk). Whichever is further is where data ends.
                end = max([o + len(d) for o, d in chunks.items()] + [reply.offset])
                if end > max_bytes:
                    raise FtpTooLarge("read", path, FtpErr.INVALID_DATA_SIZE,
                                      f"the file is larger than the limit of {max_bytes} bytes")
                break
            data = reply.body
            if reply.offset % size or reply.offset + len(data) > max_bytes:
                if reply.offset + len(data) > max_bytes:
                    raise FtpTooLarge("read", path, FtpErr.INVALID_DATA_SIZE,
                                      f"the file is larger than the limit of {max_bytes} bytes")
                raise FtpError("read", path, FtpErr.INVALID_DATA_SIZE, f"packet at unaligned offset {reply.offset}")
            if reply.offset not in chunks:
                # only new data counts as progress: a packet repeated over and over (a loop on the link,
                # or a hostile peer) must still end in a stall, bounded by burst_restarts (issue 11)
                last_packet = time.monotonic()
                chunks[reply.offset] = data
                have += len(data)
                if progress is not None:
                    progress(have, reported)
            if reply.burst_complete:
                if len(data) < size:
                    end = reply.offset + len(data)
                    break
                self._send_burst(reply.offset + len(data))
        return self._fill_gaps(path, chunks, end, size, max_bytes, progress, reported)

    def _send_burst(self, offset: int) -> None:
        self._send(FtpPacket(self._seq, self._session, Op.BURST_READ_FILE, self.limits.burst_size, offset=offset))

    @staticmethod
    def _first_missing(chunks: dict[int, bytes], size: int) -> int:
        offset = 0
        while offset in chunks and len(chunks[offset]) == size:
            offset += size
        return offset

    def _fill_gaps(self, path: str, chunks: dict[int, bytes], end: int | None, size: int, max_bytes: int,
                   progress: Progress | None, reported: int | None) -> bytes:
        if end is None:
            raise FtpError("read", path, None, "no end of file")
        offset = 0
        out = bytearray()
        have = sum(len(d) for d in chunks.values())
        while offset < end:
            data = chunks.get(offset)
            if data is None:
                reply = self._request(Op.READ_FILE, offset=offset, size=size, what="read")
                if reply.opcode == Op.NAK and reply.error == FtpErr.EOF:
                    break
                self._check(reply, "read", path)
                data = reply.body
                have += len(data)
                if progress is not None:
                    progress(have, reported)
            out += data
            if len(out) > max_bytes:
                raise FtpTooLarge("read", path, FtpErr.INVALID_DATA_SIZE,
                                  f"the file is larger than the limit of {max_bytes} bytes")
            if len(data) < size:
                break
            offset += size
        return bytes(out)

    def write_file(self, path: str, data: bytes, progress: Progress | None = None) -> None:
        """Create (or truncate) ``path`` and write ``data``; one write in flight at a time."""
        self._open(Op.CREATE_FILE, path, "write")
        try:
            for offset in range(0, len(data), MAX_DATA):
                block = data[offset:offset + MAX_DATA]
                self._check(self._request(Op.WRITE_FILE, data=block, offset=offset, what="write"), "write", path)
                if progress is not None:
                    progress(offset + len(block), len(data))
        finally:
            self._terminate()

    def remove(self, path: str) -> None:
        self._check(self._request(Op.REMOVE_FILE, path=path, what="remove"), "remove", path)

    def mkdir(self, path: str) -> None:
        self._check(self._request(Op.CREATE_DIRECTORY, path=path, what="mkdir"), "mkdir", path)
