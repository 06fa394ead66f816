"""Joining of partial lines: Docker json-file 16 KB splits and CRI P/F tags; line size limit.

The common case (no partial line in a chunk) is detected with bulk byte searches and returns
the chunk untouched; only chunks that hold a partial line are walked line by line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DOCKER_PREFIX = b'{"log":"'
DOCKER_STREAM = b'","stream":"'
DOCKER_NL_STREAM = b'\\n","stream":"'
# `\\n","stream"` ends with an escaped backslash then a literal n: needs the careful check.
DOCKER_AMBIGUOUS = b'\\\\n","stream":"'
CRI_PARTIAL = re.compile(rb"^[^ \n]+ [^ \n]+ P(?: |$)", re.MULTILINE)
BACKSLASH = 0x5C


@dataclass
class Pending:
    """Pieces of one logical line seen so far for one stream."""

    offset: int  # file offset of the first piece: nothing before it may be committed
    head: bytes  # docker: suffix after the log string; CRI: "<time> <stream> F "
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    oversize: bool = False


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

    def reset(self) -> None:
        """Forget all pieces (after a truncation)."""
        self.pending.clear()

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
            if self.docker:
                oversize += self._docker_line(line, pos)
            else:
                oversize += self._cri_line(line, pos)
            pos += len(line) + 1
        data = b"\n".join(out) + b"\n" if out else b""
        return Joined(data, False, oversize)

    def flush(self) -> bytes:
        """Emit every unfinished logical line as is (end of a drained or final file)."""
        out = [self._wrap(p.head, p.parts) for p in self.pending.values()]
        self.pending.clear()
        return b"".join(line + b"\n" for line in out)

    def _has_partials(self, chunk: bytes) -> bool:
        if self.docker:
            if DOCKER_AMBIGUOUS in chunk:
                return True
            # Every docker line has one `","stream":"`; complete ones have `\n` before it.
            return chunk.count(b"\n") != chunk.count(DOCKER_NL_STREAM)
        return b" P" in chunk and CRI_PARTIAL.search(chunk) is not None

    def _docker_line(self, line: bytes, pos: int) -> int:
        split = line.find(DOCKER_STREAM, len(DOCKER_PREFIX))
        if not line.startswith(DOCKER_PREFIX) or split < 0:
            self._out.append(line)  # not the standard layout: ship untouched
            return 0
        stream_end = line.find(b'"', split + len(DOCKER_STREAM))
        stream = line[split + len(DOCKER_STREAM) : stream_end]
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
        if not partial and stream not in self.pending:
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
            pend = self.pending[stream] = Pending(pos, head)
        oversize = 0
        if pend.parts and pend.size + len(text) + len(head) + len(DOCKER_PREFIX) > self.max_line:
            # Over the limit: ship what we have as its own line, keep joining the rest.
            out.append(self._wrap(pend.head, pend.parts))
            if not pend.oversize:
                oversize = 1
            pend.parts, pend.size, pend.oversize, pend.offset = [], 0, True, pos
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
