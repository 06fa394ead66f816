"""Reading of one file: chunked reads of complete lines, truncation (copytruncate), close.

When a rotated file is drained and closed is rotation.py's decision."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from forwarder.offsets import FINGERPRINT_BYTES, Fingerprint, Stored
from forwarder.partials import PartialJoiner
from forwarder.scan import FileKey

log = logging.getLogger("forwarder.tail")


@dataclass
class Chunk:
    """Complete logical lines read from one file, with offset bookkeeping."""

    data: bytes
    start: int | None  # file offset of data[0] when data is byte-identical to the file
    safe_offset: int  # every line before this offset is in `data` or an earlier chunk
    consumed: int  # file bytes consumed by this read
    oversize: int  # lines shipped in pieces because they exceeded max_line_bytes


class TailedFile:
    """An open log file, followed by (dev, inode) whatever its path becomes."""

    def __init__(self, key: FileKey, path: str, fd: int, offset: int, max_line: int) -> None:
        self.key = key
        self.path = path  # as globbed (the /var/log/containers symlink)
        self.src = os.path.basename(path)
        self.target = os.path.realpath(path)  # the file itself, to find it after a rotation
        self.fd = fd
        self.offset = offset  # next byte to read; everything before it was consumed
        self.size = offset
        self.max_line = max_line
        self.joiner = PartialJoiner(max_line)
        self.draining_since: float | None = None  # set when rotated away or deleted
        self.at_eof = False  # as of the last read: nothing complete was left to read
        self.truncations = 0  # reported (and reset) by the main loop
        self._fingerprint: Fingerprint | None = None

    @classmethod
    def open(
        cls, key: FileKey, path: str, stored: Stored | None, max_line: int
    ) -> TailedFile | None:
        """Open `path` if it still is the file `key`; resume at the stored offset if it
        belongs to this file (see Stored.applies_to), else read from the head."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            log.warning("cannot open file", extra={"path": path, "error": str(exc)})
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != key:
            os.close(fd)  # replaced between scan and open; the next scan picks it up
            return None
        offset = 0
        if stored is not None and stored.applies_to(fd, st.st_size):
            offset = stored.offset
        elif stored is not None and stored.offset:
            log.warning(
                "stored offset does not belong to this file (inode reused or file rewritten), "
                "reading from head",
                extra={"path": path, "stored_offset": stored.offset, "size": st.st_size},
            )
        return cls(key, path, fd, offset, max_line)

    def check_truncation(self) -> os.stat_result:
        """Look at the file now; if it shrank below the read offset (copytruncate), go back
        to its head. Called on every read, and for every file at each commit, so truncation
        is seen even while reads wait for buffer room."""
        st = os.fstat(self.fd)
        self.size = st.st_size
        if st.st_size < self.offset:
            log.warning("file truncated, reading from head", extra={"path": self.path})
            self.offset = 0
            self.truncations += 1
            self.joiner.reset()
            self._fingerprint = None
        return st

    def fingerprint(self) -> Fingerprint:
        """The fingerprint of the file's first bytes (kept once it covers FINGERPRINT_BYTES)."""
        fp = self._fingerprint
        if fp is None or (fp.length < FINGERPRINT_BYTES and self.size > fp.length):
            fp = self._fingerprint = Fingerprint.of(self.fd, self.size)
        return fp

    def finished(self) -> bool:
        """Every byte of the file is consumed and no piece of a line waits (checked now)."""
        return os.fstat(self.fd).st_size <= self.offset and not self.joiner.pending

    def unshipped(self) -> int:
        """Bytes after the last complete line: an unterminated tail or unfinished pieces."""
        return max(0, os.fstat(self.fd).st_size - self.joiner.safe_offset(self.offset))

    def start_draining(self) -> None:
        """The file was rotated away or deleted: read what is left, then close."""
        if self.draining_since is None:
            self.draining_since = time.monotonic()
            log.info("file rotated or deleted, draining", extra={"path": self.path})

    def read(self, read_size: int, final: bool) -> Chunk | None:
        """Read the next chunk of complete lines, or None when nothing complete is available.

        `final`: the file will not grow any more, so an unterminated last line and unfinished
        partial lines are shipped too.
        """
        st = self.check_truncation()
        data = os.pread(self.fd, read_size, self.offset) if st.st_size > self.offset else b""
        self.at_eof = len(data) < read_size and self.offset + len(data) >= st.st_size
        end = data.rfind(b"\n") + 1
        if end:
            return self._emit(data[:end] if end < len(data) else data, end, final and self.at_eof)
        if len(data) >= read_size:
            return self._oversize_physical(data)
        if final:
            tail = data + b"\n" if data else b""
            return self._emit(tail, len(data), True)
        return None

    def _emit(self, data: bytes, consumed: int, flush: bool) -> Chunk | None:
        start = self.offset
        joined = self.joiner.process(data, start)
        out = joined.data
        if flush and self.joiner.pending:
            out += self.joiner.flush()
        self.offset += consumed
        if not out and not consumed:
            return None
        return Chunk(
            out,
            start if joined.raw and not flush else None,
            self.joiner.safe_offset(self.offset),
            consumed,
            joined.oversize,
        )

    def _oversize_physical(self, data: bytes) -> Chunk:
        """A physical line longer than max_line: ship its first max_line bytes as a line."""
        log.warning("oversize line split", extra={"path": self.path, "offset": self.offset})
        piece = data[: self.max_line]
        chunk = self._emit(piece + b"\n", self.max_line, False)
        assert chunk is not None
        chunk.oversize += 1
        chunk.start = None
        return chunk

    def close(self) -> None:
        """Release the file descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
