"""Reading of one file: chunked reads of complete lines, truncation (copytruncate), close.

When a rotated file is drained and closed is rotation.py's decision."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from forwarder.offsets import Fingerprint, Stored
from forwarder.partials import PartialJoiner
from forwarder.scan import FileKey, is_regular

log = logging.getLogger("forwarder.tail")
# First bytes compared at every read (a truncation changes them): a kilobyte, so a Docker
# line's time (at its end) is in it for all but long first lines.
HEAD_BYTES = 1024


@dataclass
class Chunk:
    """Complete logical lines read from one file, with offset bookkeeping."""

    data: bytes
    start: int | None  # file offset of data[0] when data is byte-identical to the file
    safe_offset: int  # every line before this offset is in `data` or an earlier chunk
    consumed: int  # file bytes consumed by this read
    oversize: int  # lines shipped in pieces because they exceeded max_line_bytes
    stale: int = 0  # unfinished partial lines shipped as they were after waiting too long


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
        self.last_growth = time.monotonic()  # when a read last found new bytes
        self._truncations = 0  # found since the main loop last took them
        self.after_newline = offset == 0  # the byte before `offset` is a line feed we read
        self._fingerprint: Fingerprint | None = None
        self._fingerprint_settled = False  # no longer extended as the file grows
        self._looked: tuple[int, int] = (-1, -1)  # (size, mtime) at the last fingerprint check
        self._head = b""  # the file's first bytes, as last seen (see _same_head)

    @classmethod
    def open(
        cls, key: FileKey, path: str, stored: Stored | None, max_line: int, warn: bool = True
    ) -> TailedFile | None:
        """Open `path` if it still is the regular file `key`; resume at the stored offset if
        it belongs to this file (see Stored.applies_to), else read from the head.

        Raises OSError when the path cannot be opened; None when it no longer leads to `key`.
        `warn`: log when the stored offset does not belong to the file (not for the memory of
        closed files, whose inodes new files reuse all the time).
        O_NONBLOCK: a path swapped for a FIFO must not block the loop (it is refused below).
        """
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != key or not is_regular(st.st_mode):
            os.close(fd)  # replaced between scan and open; the next scan looks again
            return None
        offset = 0
        if stored is not None and stored.applies_to(fd, st.st_size):
            offset = stored.offset
        elif stored is not None and stored.offset and warn:
            log.warning(
                "stored offset does not belong to this file (inode reused or file rewritten), "
                "reading from head",
                extra={"path": path, "stored_offset": stored.offset, "size": st.st_size},
            )
        tailed = cls(key, path, fd, offset, max_line)
        tailed.after_newline = offset == 0 or os.pread(fd, 1, offset - 1) == b"\n"
        if offset:  # the runtime's format from the file's first byte, not from mid-file
            tailed.joiner.docker = os.pread(fd, 1, 0) == b"{"
        return tailed

    def check_truncation(self, deep: bool = False) -> os.stat_result:
        """Look at the file now; if it was truncated in place (copytruncate), go back to its
        head. Truncation shows as a size below the read offset, or — when the file regrew past
        the offset before this look — as first bytes that no longer match the fingerprint
        (`deep`: at every offset save, for files that changed since the last look) or as a
        byte before the offset that is no longer the line feed read there (every read)."""
        st = os.fstat(self.fd)
        self.size = st.st_size
        if st.st_size < self.offset:
            self._restart("file truncated, reading from head")
        elif deep and (st.st_size, st.st_mtime_ns) != self._looked:
            self._looked = (st.st_size, st.st_mtime_ns)
            fp = self._fingerprint
            if fp is not None and not fp.matches(self.fd, st.st_size):
                self._restart("file rewritten from its head (truncated, then grew), re-reading")
        return st

    def _restart(self, why: str) -> None:
        log.warning(why, extra={"path": self.path, "offset": self.offset})
        self.offset = 0
        self._head = b""
        self.after_newline = True
        self._truncations += 1
        self.joiner.reset()
        self._fingerprint = None
        self._fingerprint_settled = False

    def take_truncations(self) -> int:
        """Truncations found since the last call (the main loop counts and acts on them)."""
        found, self._truncations = self._truncations, 0
        return found

    def found_at(self, path: str) -> None:
        """A scan found the file at `path` (again): follow it there, no longer draining."""
        self.path = path
        self.draining_since = None

    def rotated_from(self, path: str, target: str) -> None:
        """Opened at its rotated name: known as `path` (as globbed) and `target` (the path
        it had before its rotation), draining from now (its rotation was not seen)."""
        self.path, self.src, self.target = path, os.path.basename(path), target
        self.draining_since = time.monotonic()

    def fingerprint(self) -> Fingerprint:
        """The fingerprint of the file's first bytes (Fingerprint.take: kept once settled,
        extended only while the bytes it covered are unchanged)."""
        fp = self._fingerprint
        if fp is None or (not self._fingerprint_settled and self.size > fp.length):
            if fp is not None and not fp.matches(self.fd, self.size):
                return fp  # rewritten: the next look (check_truncation) restarts the file
            fp, self._fingerprint_settled = Fingerprint.take(self.fd, self.size)
            self._fingerprint = fp
        return fp

    def finished(self, size: int | None = None) -> bool:
        """Every byte of the file (of `size`, else looked at now) is consumed and no piece of
        a line waits."""
        if size is None:
            size = os.fstat(self.fd).st_size
        return size <= self.offset and not self.joiner.pending

    def in_place(self) -> bool:
        """The file is still at the path it was opened at: only a link to it went away (the
        runtime did not rotate or delete it), so it may well grow again."""
        try:
            st = os.stat(self.target)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.key

    def deleted(self) -> bool:
        """The file has no name left (deleted; only this descriptor keeps it)."""
        return self.deleted_size() >= 0

    def deleted_size(self) -> int:
        """The file's size if it is deleted (only this descriptor keeps it; its disk space),
        else -1 (also once closed)."""
        if self.fd < 0:
            return -1
        st = os.fstat(self.fd)
        return st.st_size if st.st_nlink == 0 else -1

    def unshipped(self) -> int:
        """Bytes after the last complete line: an unterminated tail or unfinished pieces."""
        return max(0, os.fstat(self.fd).st_size - self.joiner.safe_offset(self.offset))

    def start_draining(self) -> bool:
        """The file was rotated away or deleted: read what is left, then close. True when
        it starts draining now."""
        if self.draining_since is not None:
            return False
        self.draining_since = time.monotonic()
        log.info("file rotated or deleted, draining", extra={"path": self.path})
        return True

    def read(self, read_size: int, final: bool) -> Chunk | None:
        """Read the next chunk of complete lines, or None when nothing complete is available.

        `final`: the file will not grow any more, so an unterminated last line and unfinished
        partial lines are shipped too. Reads at most what the file holds (no large buffer
        allocated and shrunk per read: that fragments the heap).
        """
        self.check_truncation()
        data = self._pread(read_size)
        self.at_eof = len(data) < read_size and self.offset + len(data) >= self.size
        if data:
            self.last_growth = time.monotonic()
        end = data.rfind(b"\n") + 1
        if end:
            return self._emit(data[:end] if end < len(data) else data, end, final and self.at_eof)
        if len(data) >= read_size:
            return self._oversize_physical(data)
        if final:
            tail = data + b"\n" if data else b""
            return self._emit(tail, len(data), True)
        return None

    def _pread(self, read_size: int) -> bytes:
        """Up to `read_size` bytes at the offset (no more than the file holds). A file
        rewritten (truncated, then grown past the offset) is read again from its head: it
        shows in its first bytes (_same_head), or in the byte before the offset, read in the
        same call, that is no longer the line feed read there."""
        size = min(read_size, self.size - self.offset)
        if size <= 0:
            return b""
        if self.offset and not self._same_head():
            self._restart("file rewritten from its head (truncated, then grew), re-reading")
            return self._pread(read_size)
        if not self.offset:
            data = os.pread(self.fd, size, 0)
            self._head = data[:HEAD_BYTES]
            return data
        if not self.after_newline:
            return os.pread(self.fd, size, self.offset)
        data = os.pread(self.fd, size + 1, self.offset - 1)
        if data[:1] == b"\n":
            return data[1:]
        self._restart("file rewritten under its read offset (truncated, then grew), re-reading")
        return self._pread(read_size)

    def _same_head(self) -> bool:
        """The file still starts with the HEAD_BYTES first seen (kept, and extended while
        shorter): a file truncated and regrown past the offset starts otherwise (every log
        line starts with its time), even when a line boundary falls at the old offset."""
        head = os.pread(self.fd, HEAD_BYTES, 0)
        if not head.startswith(self._head):
            return False
        self._head = head
        return True

    def flush_stale(self, older_than: float) -> Chunk | None:
        """Unfinished partial lines whose first piece was read before the monotonic
        `older_than`, shipped as they are so far (their continuation comes as its own line)."""
        if not self.joiner.pending:
            return None
        return self._pieces(self.joiner.flush(older_than))

    def flush_overtaken(self, timeout: float) -> Chunk | None:
        """Unfinished partial lines the runtime wrote more than `timeout` seconds before the
        last line read (`PartialJoiner.flush_overtaken`), shipped as they are so far."""
        if not self.joiner.pending:
            return None
        return self._pieces(self.joiner.flush_overtaken(timeout))

    def _pieces(self, data: bytes) -> Chunk | None:
        if not data:
            return None
        return Chunk(data, None, self.joiner.safe_offset(self.offset), 0, 0, data.count(b"\n"))

    def held_bytes(self) -> int:
        """Bytes of unfinished partial lines held for joining."""
        return self.joiner.held_bytes()

    def _emit(self, data: bytes, consumed: int, flush: bool) -> Chunk | None:
        start = self.offset
        joined = self.joiner.process(data, start)
        out = joined.data
        if flush and self.joiner.pending:
            out += self.joiner.flush()
        self.offset += consumed
        if consumed:
            self.after_newline = data[consumed - 1 : consumed] == b"\n"
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
