"""The virtual FC's MAVLink FTP server, behaving as ArduPilot's ``GCS_FTP.cpp`` was seen to.

What the agent depends on, reproduced from the recorded SITL behaviour and ArduPilot's source:

* one worker for all links, with a queue of 5 requests (more are dropped, as ArduPilot does);
  a burst occupies the worker, so a TerminateSession sent mid-burst is answered after it;
* the reply echoes the request's ``session``, its ``seq`` is the request's + 1; a repeated
  request (same sender, session, seq) gets the last reply again;
* one open file across all links; another session is refused with InvalidSession unless the
  open one has been idle for 3 s; OpenFileRO while a file is open fails with Fail;
* NAK payload: one error byte; FailErrno carries the errno, except ENOENT → FileNotFound and
  EEXIST → FileExists;
* ListDirectory packs ``D<name>\\0\\0`` / ``F<name>\\t<size>\\0\\0`` entries while they fit,
  skips ``offset`` entries, and ends with NAK EOF;
* BurstReadFile sends up to 500 packets of the requested size, the last short one with
  ``burst_complete``, then NAK EOF at the file size; packets are paced like ArduPilot on a link
  without flow control (3000 × packet size / link bytes per second, in whole milliseconds);
* CalcFileCRC32 answers with ArduPilot's CRC32 of the whole file.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.mavlink.ftpwire import MAX_DATA, FtpErr, FtpPacket, Op, crc32_ardupilot
from sim.vfc.files import FsError, OpenFile, VehicleFiles

SESSION_TIMEOUT = 3.0
QUEUE_LEN = 5
BURST_PACKETS = 500
MAVLINK2_OVERHEAD = 12
FTP_MSG_LEN = 254


@dataclass
class Request:
    channel: int
    sysid: int
    compid: int
    packet: FtpPacket


@dataclass
class Reply:
    channel: int
    sysid: int
    compid: int
    packet: FtpPacket


class FtpServer:
    def __init__(self, files: VehicleFiles, clock: Callable[[], float], link_bps: int | None = None) -> None:
        self.files = files
        self.clock = clock
        self.link_bps = link_bps
        self.queue: deque[Request] = deque()
        self.dropped = 0
        self.fd: OpenFile | None = None
        self.write_mode = False
        self.current_session = -1
        self.last_send = 0.0
        self.last: Reply | None = None
        self._job: Iterator[tuple[Reply, float]] | None = None
        self._next_time = 0.0
        self.need_banner: set[int] = set()

    def reset(self) -> None:
        """A reboot: close the open file, forget the queue."""
        self._close()
        self.queue.clear()
        self._job = None
        self.last = None
        self.need_banner.clear()

    def push(self, request: Request) -> None:
        if len(self.queue) >= QUEUE_LEN:
            self.dropped += 1
            return
        self.queue.append(request)

    def busy(self) -> bool:
        return self._job is not None or bool(self.queue)

    def next_due(self) -> float | None:
        """When the next reply is due (None when idle), so the vehicle loop can wake in time."""
        if self._job is None and not self.queue:
            return None
        return self._next_time if self._job is not None else self.clock()

    def step(self) -> list[Reply]:
        """Replies due now. Call often; a paced burst hands out one packet per due time."""
        out: list[Reply] = []
        while True:
            now = self.clock()
            if self._job is None:
                if not self.queue:
                    return out
                self._job = self._handle(self.queue.popleft())
                self._next_time = now
            if now < self._next_time:
                return out
            try:
                reply, delay = next(self._job)
            except StopIteration:
                self._job = None
                continue
            self.last_send = self.clock()
            if reply.packet.req_opcode == Op.TERMINATE_SESSION:
                self.last_send = 0.0
            self.last = reply
            out.append(reply)
            if delay > 0:
                # keep the average pace even when the loop wakes late (ArduPilot sleeps after each packet)
                self._next_time = max(self._next_time + delay, now - delay)
                return out

    # ---- request handling
    def _close(self) -> None:
        if self.fd is not None:
            self.fd.close()
            self.fd = None
        self.current_session = -1

    @staticmethod
    def _fail(reply: FtpPacket, err: int, code: int = 0) -> None:
        reply.opcode = Op.NAK
        reply.size = 1
        if err == FtpErr.FAIL_ERRNO:
            if code == errno.ENOENT:
                err = FtpErr.FILE_NOT_FOUND
            elif code == errno.EEXIST:
                err = FtpErr.FILE_EXISTS
            else:
                reply.data = bytes([err, code & 0xFF])
                reply.size = 2
                return
        reply.data = bytes([err])

    @staticmethod
    def _name(req: FtpPacket) -> str | None:
        """The path in the request, or None when ``size`` does not match it (ArduPilot's check)."""
        raw = req.data
        n = raw.find(b"\0")
        name_len = len(raw) if n < 0 else n
        if req.size == 0:
            return None
        if name_len != req.size and not (req.size - name_len == 1 and raw[-1] == 0):
            return None
        return raw[:name_len].decode("latin-1")

    def _handle(self, request: Request) -> Iterator[tuple[Reply, float]]:
        req = request.packet
        last = self.last
        if (last is not None and last.sysid == request.sysid and last.compid == request.compid
                and last.packet.session == req.session and (req.seq + 1) & 0xFFFF == last.packet.seq):
            yield Reply(request.channel, request.sysid, request.compid, last.packet), 0.0
            return
        reply = FtpPacket(seq=(req.seq + 1) & 0xFFFF, session=req.session, opcode=Op.NONE, req_opcode=req.opcode)
        out = Reply(request.channel, request.sysid, request.compid, reply)
        now = self.clock()
        if req.size > MAX_DATA:
            self._fail(reply, FtpErr.INVALID_DATA_SIZE)
        elif req.session != self.current_session and req.opcode in (Op.TERMINATE_SESSION, Op.RESET_SESSIONS):
            reply.opcode = Op.ACK
        elif (self.fd is not None and req.session != self.current_session
              and now - self.last_send < SESSION_TIMEOUT):
            self._fail(reply, FtpErr.INVALID_SESSION)
        else:
            if self.fd is not None and req.session != self.current_session:
                self._close()
            if req.opcode == Op.BURST_READ_FILE:
                yield from self._burst(request, reply)
                return
            if not self._dispatch(request, reply, now):
                return
        yield out, 0.0

    def _dispatch(self, request: Request, reply: FtpPacket, now: float) -> bool:
        """Fill in ``reply``; False when the request gets no reply at all (a stray ACK/NAK)."""
        req = request.packet
        op = req.opcode
        if op == Op.NONE:
            reply.opcode = Op.ACK
        elif op in (Op.TERMINATE_SESSION, Op.RESET_SESSIONS):
            self._close()
            reply.opcode = Op.ACK
        elif op == Op.LIST_DIRECTORY:
            self._list(req, reply)
        elif op == Op.OPEN_FILE_RO:
            self._open_ro(request, reply, now)
        elif op == Op.READ_FILE:
            self._read(req, reply)
        elif op in (Op.CREATE_FILE, Op.OPEN_FILE_WO):
            self._open_wo(req, reply)
        elif op == Op.WRITE_FILE:
            self._write(req, reply)
        elif op in (Op.REMOVE_FILE, Op.REMOVE_DIRECTORY, Op.CREATE_DIRECTORY, Op.CALC_FILE_CRC32):
            self._path_op(req, reply)
        elif op == Op.RENAME:
            self._rename(req, reply)
        elif op in (Op.ACK, Op.NAK):
            return False
        else:
            self._fail(reply, FtpErr.FAIL)
        return True

    def _list(self, req: FtpPacket, reply: FtpPacket) -> None:
        reply.offset = req.offset
        name = self._name(req)
        if name is None:
            return self._fail(reply, FtpErr.INVALID_DATA_SIZE)
        if len(name) > 1 and name.endswith("/"):
            name = name[:-1]
        try:
            entries = self.files.list_dir(name)
        except FsError as exc:
            return self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
        body = b""
        for entry in entries[req.offset:]:
            text = (f"D{entry.name}" if entry.is_dir else f"F{entry.name}\t{entry.size}").encode("latin-1") + b"\0"
            if len(body) + len(text) >= MAX_DATA:
                break
            body += text + b"\0"
        if not body:
            return self._fail(reply, FtpErr.EOF)
        reply.opcode = Op.ACK
        reply.size = len(body)
        reply.data = body

    def _open_ro(self, request: Request, reply: FtpPacket, now: float) -> None:
        req = request.packet
        if self.fd is not None and now - self.last_send > SESSION_TIMEOUT:
            self._close()
        if self.fd is not None:
            return self._fail(reply, FtpErr.FAIL)
        name = self._name(req)
        if name is None:
            return self._fail(reply, FtpErr.INVALID_DATA_SIZE)
        try:
            size = self.files.stat_size(name)
            self.fd = self.files.open_read(name)
        except FsError as exc:
            return self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
        self.write_mode = False
        self.current_session = req.session
        reply.opcode = Op.ACK
        reply.size = 4
        reply.data = (size & 0xFFFFFFFF).to_bytes(4, "little")
        if name.lstrip("/").startswith("@PARAM/param.pck"):
            self.need_banner.add(request.channel)

    def _read(self, req: FtpPacket, reply: FtpPacket) -> None:
        if self.fd is None:
            return self._fail(reply, FtpErr.FILE_NOT_FOUND)
        if self.write_mode:
            return self._fail(reply, FtpErr.FAIL)
        try:
            data = self.fd.read(req.offset, min(MAX_DATA, req.size))
        except FsError as exc:
            return self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
        if not data:
            return self._fail(reply, FtpErr.EOF)
        reply.opcode = Op.ACK
        reply.offset = req.offset
        reply.size = len(data)
        reply.data = data

    def _burst_delay(self, max_read: int) -> float:
        if not self.link_bps:
            return 0.0
        pkt = MAVLINK2_OVERHEAD + FTP_MSG_LEN - (MAX_DATA - max_read)
        return (3000 * pkt // self.link_bps) / 1000.0

    def _burst(self, request: Request, reply: FtpPacket) -> Iterator[tuple[Reply, float]]:
        req = request.packet
        out = Reply(request.channel, request.sysid, request.compid, reply)
        max_read = req.size or MAX_DATA
        if self.fd is None:
            self._fail(reply, FtpErr.FILE_NOT_FOUND)
            yield out, 0.0
            return
        if self.write_mode:
            self._fail(reply, FtpErr.FAIL)
            yield out, 0.0
            return
        delay = self._burst_delay(max_read)
        offset = req.offset
        for i in range(BURST_PACKETS):
            try:
                data = self.fd.read(offset, min(MAX_DATA, max_read))
            except FsError as exc:
                self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
                break
            if not data:
                self._fail(reply, FtpErr.EOF)
                break
            packet = FtpPacket(seq=reply.seq, session=reply.session, opcode=Op.ACK, size=len(data),
                               req_opcode=req.opcode, offset=req.offset + i * max_read, data=data,
                               burst_complete=int(len(data) < max_read or i == BURST_PACKETS - 1))
            yield Reply(request.channel, request.sysid, request.compid, packet), delay
            offset += len(data)
            reply.offset = packet.offset + len(data) if len(data) < max_read else packet.offset
            reply.burst_complete = packet.burst_complete
            reply.seq = (reply.seq + 1) & 0xFFFF
            if self.fd is None:
                return
        if reply.opcode == Op.NAK:
            yield out, 0.0

    def _open_wo(self, req: FtpPacket, reply: FtpPacket) -> None:
        if self.fd is not None:
            return self._fail(reply, FtpErr.FAIL)
        name = self._name(req)
        if name is None:
            return self._fail(reply, FtpErr.INVALID_DATA_SIZE)
        try:
            self.fd = self.files.open_write(name)
        except FsError as exc:
            return self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
        self.write_mode = True
        self.current_session = req.session
        reply.opcode = Op.ACK

    def _write(self, req: FtpPacket, reply: FtpPacket) -> None:
        if self.fd is None:
            return self._fail(reply, FtpErr.FILE_NOT_FOUND)
        if not self.write_mode:
            return self._fail(reply, FtpErr.FAIL)
        try:
            self.fd.write(req.offset, req.data[:req.size])
        except FsError as exc:
            return self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
        reply.opcode = Op.ACK
        reply.offset = req.offset

    def _path_op(self, req: FtpPacket, reply: FtpPacket) -> None:
        name = self._name(req)
        if name is None:
            return self._fail(reply, FtpErr.INVALID_DATA_SIZE)
        try:
            if req.opcode == Op.CALC_FILE_CRC32:
                crc = crc32_ardupilot(self.files.read_all(name))
                reply.size = 4
                reply.data = crc.to_bytes(4, "little")
            elif req.opcode == Op.CREATE_DIRECTORY:
                self.files.mkdir(name)
            else:
                self.files.remove(name, directory=req.opcode == Op.REMOVE_DIRECTORY)
        except FsError as exc:
            return self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
        reply.opcode = Op.ACK

    def _rename(self, req: FtpPacket, reply: FtpPacket) -> None:
        raw = req.data[:req.size]
        parts = raw.split(b"\0")
        if req.size == 0 or len(parts) < 2 or not parts[0] or not parts[1]:
            return self._fail(reply, FtpErr.INVALID_DATA_SIZE)
        try:
            self.files.rename(parts[0].decode("latin-1"), parts[1].decode("latin-1"))
        except FsError as exc:
            return self._fail(reply, FtpErr.FAIL_ERRNO, exc.errno)
        reply.opcode = Op.ACK
