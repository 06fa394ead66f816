"""Joining of partial lines: Docker json-file 16 KB splits and CRI P/F tags; line size limit.

The common case (no partial line in a chunk) is detected with bulk byte searches and returns
the chunk untouched; only chunks that hold a partial line are walked line by line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime

DOCKER_PREFIX = b'{"log":"'
DOCKER_STREAM = b'","stream":"'
DOCKER_NL_STREAM = b'\\n","stream":"'
# `\\n","stream"` ends with an escaped backslash then a literal n: needs the careful check.
DOCKER_AMBIGUOUS = b'\\\\n","stream":"'
CRI_STDOUT_P, CRI_STDERR_P = b" stdout P", b" stderr P"
CRI_PARTIAL = re.compile(rb"^[^ \n]+ [^ \n]+ P(?: |$)", re.MULTILINE)
BACKSLASH = 0x5C
STREAMS = (b"stdout", b"stderr")  # pieces are joined (and held) per stream: only these two
HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")  # first half of a \\u pair
DOCKER_TIME = b'"time":"'


@dataclass
class Pending:
    """Pieces of one logical line seen so far for one stream."""

    offset: int  # file offset of the first piece: nothing before it may be committed
    head: bytes  # docker: suffix after the log string; CRI: "<time> <stream> F "
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    oversize: bool = False
    since: float = field(default_factory=time.monotonic)  # when the first piece was read
    written: float | None = None  # the runtime's time of the first piece, if it reads as one


@dataclass
class Joined:
    """Result of processing one chunk of complete physical lines."""

    data: bytes  # complete logical lines, each ending in b"\n"
    raw: bool  # data is byte-identical to the file bytes it came from
    oversize: int  # logical lines cut into pieces because they exceeded max_line_bytes


def docker_log_complete(log: bytes) -> bool:
    """True when a docker log string ends with the JSON escape \\n (an odd run of backslashes)."""
    if not log.endswith(b"\\n"):
        return False
    i = len(log) - 2
    run = 0
    while i >= 0 and log[i] == BACKSLASH:
        run += 1
        i -= 1
    return run % 2 == 1


class PartialJoiner:
    """Per-file state machine that joins partial lines, per stream (stdout/stderr)."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line = max_line_bytes
        self.docker: bool | None = None  # decided from the first byte of the file
        self.pending: dict[bytes, Pending] = {}
        self._out: list[bytes] = []
        self._shipped_past = False  # a line after an unfinished piece was emitted
        self.newest: float | None = None  # runtime time of the last line read past a piece

    def reset(self) -> None:
        """Forget all pieces (after a truncation)."""
        self.pending.clear()
        self._shipped_past = False

    def safe_offset(self, end: int) -> int:
        """Offset up to which every line is emitted: before the first unfinished piece."""
        if not self.pending:
            return end
        return min(end, *(p.offset for p in self.pending.values()))

    def process(self, chunk: bytes, offset: int) -> Joined:
        """Join partials in `chunk` (complete physical lines read at file `offset`)."""
        if self.docker is None and chunk:
            self.docker = chunk.startswith(b"{")
        if not self.pending and not self._has_partials(chunk):
            return Joined(chunk, True, 0)
        out = self._out = []
        oversize = 0
        pos = offset
        for line in chunk.split(b"\n")[:-1]:
            emitted = len(out)
            if self.docker:
                oversize += self._docker_line(line, pos)
            else:
                oversize += self._cri_line(line, pos)
            self._shipped_past = bool(self.pending) and (self._shipped_past or len(out) > emitted)
            pos += len(line) + 1
        if self.pending and chunk:
            self.newest = runtime_time(chunk[chunk.rfind(b"\n", 0, -1) + 1 :], self.docker)
        data = b"\n".join(out) + b"\n" if out else b""
        self._out = []  # the lines are in `data`: held on, they would outlive their read
        return Joined(data, False, oversize)

    def flush(self, older_than: float | None = None) -> bytes:
        """Emit unfinished logical lines as they are so far: all of them (end of a drained or
        final file), or those whose first piece was read before the monotonic `older_than`."""
        streams = [s for s, p in self.pending.items() if older_than is None or p.since < older_than]
        return self._flush(streams)

    def flush_overtaken(self, timeout: float) -> bytes:
        r"""Emit the unfinished logical lines whose first piece the runtime wrote more than
        `timeout` seconds before the last line read (by the times the runtime wrote on
        them): any continuation written within `timeout` would have been read before that
        line — and that waited `timeout` here too (a clock step forward between two lines
        must not cut a line whose end comes right after). The test of a reader behind its
        file, where waiting `timeout` on the wall clock alone proves nothing (the
        continuation may be unread) and the file is never read to its end.

        >>> import time
        >>> j = PartialJoiner(1024)
        >>> j.process(b"2024-05-01T10:00:00Z stdout P 50%\n", 0).data
        b''
        >>> _ = j.process(b"2024-05-01T10:00:03Z stderr F x\n", 33)
        >>> time.sleep(0.2)
        >>> j.flush_overtaken(4.0)  # written 3 s after the piece: no proof
        b''
        >>> _ = j.process(b"2024-05-01T10:00:05Z stderr F y\n", 64)
        >>> j.flush_overtaken(0.1)  # 5 s after, and it waited here 0.2 s
        b'2024-05-01T10:00:00Z stdout F 50%\n'
        """
        if self.newest is None:
            return b""
        cutoff, waited = self.newest - timeout, time.monotonic() - timeout
        return self._flush([
            s for s, p in self.pending.items()
            if p.written is not None and p.written < cutoff and p.since < waited
        ])  # fmt: skip

    def _flush(self, streams: list[bytes]) -> bytes:
        out = []
        for stream in streams:
            pend = self.pending.pop(stream)
            out.append(self._wrap(pend.head, pend.parts) + b"\n")
        self._shipped_past = self._shipped_past and bool(self.pending)
        return b"".join(out)

    def shipped_past_pending(self) -> bool:
        """An unfinished piece holds the offset back while lines after it were emitted: a
        restart from that offset would send those lines again."""
        return bool(self.pending) and self._shipped_past

    def held_bytes(self) -> int:
        """Bytes of unfinished pieces held in memory."""
        return sum(p.size + len(p.head) for p in self.pending.values())

    def _has_partials(self, chunk: bytes) -> bool:
        if self.docker:
            if DOCKER_AMBIGUOUS in chunk:
                return True
            # Every docker line has one `","stream":"`; complete ones have `\n` before it.
            return chunk.count(b"\n") != chunk.count(DOCKER_NL_STREAM)
        # Only stdout and stderr pieces are joined (others are shipped as they are, and the
        # chunk with them): two long needles scan faster than b" P" (~20 % less a line).
        return (CRI_STDOUT_P in chunk or CRI_STDERR_P in chunk) and bool(CRI_PARTIAL.search(chunk))

    def _docker_line(self, line: bytes, pos: int) -> int:
        split = line.find(DOCKER_STREAM, len(DOCKER_PREFIX))
        if not line.startswith(DOCKER_PREFIX) or split < 0:
            self._out.append(line)  # not the standard layout: ship untouched
            return 0
        stream_end = line.find(b'"', split + len(DOCKER_STREAM))
        stream = line[split + len(DOCKER_STREAM) : stream_end]
        if stream not in STREAMS:  # no runtime writes it: not joined (nor held) by stream
            self._out.append(line)
            return 0
        log = line[len(DOCKER_PREFIX) : split]
        return self._piece(stream, log, line[split:], pos, docker_log_complete(log))

    def _cri_line(self, line: bytes, pos: int) -> int:
        sp1 = line.find(b" ")
        sp2 = line.find(b" ", sp1 + 1) if sp1 >= 0 else -1
        if sp2 < 0:
            self._out.append(line)
            return 0
        sp3 = line.find(b" ", sp2 + 1)
        tag = line[sp2 + 1 : sp3] if sp3 >= 0 else line[sp2 + 1 :]
        content = line[sp3 + 1 :] if sp3 >= 0 else b""
        stream = line[sp1 + 1 : sp2]
        head = line[: sp2 + 1] + b"F "
        partial = tag.split(b":")[0] == b"P"
        if stream not in STREAMS or (not partial and stream not in self.pending):
            self._out.append(line)
            return 0
        return self._piece(stream, content, head, pos, not partial)

    def _piece(self, stream: bytes, text: bytes, head: bytes, pos: int, last: bool) -> int:
        """Add one piece of a logical line; emit the line when `last`. Returns oversize count."""
        out = self._out
        pend = self.pending.get(stream)
        if pend is None:
            if last:
                out.append(self._wrap(head, [text]))
                return 0
            pend = self.pending[stream] = Pending(
                pos, head, written=runtime_time(head, self.docker)
            )
        oversize = 0
        if pend.parts and pend.size + len(text) + len(head) + len(DOCKER_PREFIX) > self.max_line:
            # Over the limit: ship what we have as its own line, keep joining the rest.
            out.append(self._wrap(pend.head, pend.parts))
            if not pend.oversize:
                oversize = 1
            pend.parts, pend.size, pend.oversize, pend.offset = [], 0, True, pos
            pend.since, pend.written = time.monotonic(), runtime_time(head, self.docker)
        pend.parts.append(text)
        pend.size += len(text)
        if last:
            out.append(self._wrap(pend.head, pend.parts))
            del self.pending[stream]
        return oversize

    def _wrap(self, head: bytes, parts: list[bytes]) -> bytes:
        if self.docker:
            return DOCKER_PREFIX + b"".join(parts) + head
        return head + b"".join(parts)


def runtime_time(line: bytes, docker: bool | None) -> float | None:
    """Seconds since the epoch of the time the runtime wrote on a line (Docker: its `time`
    field; CRI: its first field, RFC 3339 with `Z` or an offset), or of a piece's head; None
    when there is none that reads as one.

    >>> runtime_time(b"2024-05-01T10:00:00.5Z stdout F hi", False)
    1714557600.5
    >>> runtime_time(b'{"log":"hi\\n","stream":"stdout","time":"2024-05-01T12:00:00+02:00"}', True)
    1714557600.0
    >>> runtime_time(b"garbage", False) is None
    True
    """
    if docker:
        at = line.rfind(DOCKER_TIME)
        stamp = (
            line[at + len(DOCKER_TIME) : line.find(b'"', at + len(DOCKER_TIME))] if at >= 0 else b""
        )
    else:
        stamp = line[: line.find(b" ")]
    try:
        return datetime.fromisoformat(stamp.decode("ascii")).timestamp()
    except (ValueError, UnicodeDecodeError):
        return None


def cut_line(line: bytes) -> tuple[bytes, bytes]:
    """Cut one LF-terminated line near its middle into two lines that each stand whole: a
    Docker entry into two entries of its stream and time, a CRI line into two F lines with
    its time and stream, anything else into two lines. Never inside a JSON escape or a UTF-8
    character, so no byte is lost or garbled.

    >>> first, rest = cut_line(b'{"log":"abcdef","stream":"stdout","time":"T"}\\n')
    >>> first
    b'{"log":"abc","stream":"stdout","time":"T"}\\n'
    >>> rest
    b'{"log":"def","stream":"stdout","time":"T"}\\n'
    >>> cut_line(b"T stderr F abcdef\\n")
    (b'T stderr F abc\\n', b'T stderr F def\\n')
    """
    body = line[:-1] if line.endswith(b"\n") else line
    split = body.find(DOCKER_STREAM, len(DOCKER_PREFIX))
    if body.startswith(DOCKER_PREFIX) and split > len(DOCKER_PREFIX):
        text, tail = body[len(DOCKER_PREFIX) : split], body[split:]
        half = len(text) // 2  # if that falls in the first escape, one escape pair later
        at = _json_safe_cut(text, half) or _json_safe_cut(text, min(len(text), half + 12))
        if 0 < at < len(text):
            first, rest = text[:at], text[at:]
            return DOCKER_PREFIX + first + tail + b"\n", DOCKER_PREFIX + rest + tail + b"\n"
    fields = body.split(b" ", 3)
    if len(fields) == 4 and fields[1] in (b"stdout", b"stderr") and len(fields[3]) > 1:
        head = b" ".join(fields[:2]) + b" F "
        text = fields[3]
        at = _utf8_safe_cut(text, len(text) // 2) or len(text) // 2
        return head + text[:at] + b"\n", head + text[at:] + b"\n"
    at = _utf8_safe_cut(body, len(body) // 2) or max(1, len(body) // 2)
    return body[:at] + b"\n", body[at:] + b"\n"


def _utf8_safe_cut(text: bytes, at: int) -> int:
    """`at` moved back to the start of the UTF-8 character it falls in (0 if none)."""
    while at > 0 and 0x80 <= text[at] < 0xC0:
        at -= 1
    return at


def _json_safe_cut(text: bytes, at: int) -> int:
    """`at` moved back out of any JSON escape (\\x, \\uXXXX), from between the two escapes
    of a surrogate pair, and out of any UTF-8 character."""
    at = _utf8_safe_cut(text, at)
    for i in range(at - 1, max(0, at - 6) - 1, -1):  # an escape that starts within 6 bytes
        if text[i] == BACKSLASH and _escape_starts(text, i):
            length = 6 if text[i + 1 : i + 2] == b"u" else 2
            at = i if i + length > at else at
            break
    if at >= 6 and HIGH_SURROGATE.fullmatch(text, at - 6, at) and _escape_starts(text, at - 6):
        return at - 6
    return at


def _escape_starts(text: bytes, i: int) -> bool:
    """The backslash at `i` starts an escape (an even run of backslashes precedes it)."""
    run = 0
    while i - run - 1 >= 0 and text[i - run - 1] == BACKSLASH:
        run += 1
    return run % 2 == 0
