"""Acknowledgement tracking: which file offsets Firehose has acknowledged, and how late it is.

Records of one file are acknowledged in any order; the committed offset of the file follows
the acknowledged prefix, so it never passes a line that is still in flight:

    >>> t = AckTracker()
    >>> t.start((1, 2), 0)
    >>> a, b = t.mark((1, 2), 100, 1, born=0.0), t.mark((1, 2), 200, 1, born=0.0)
    >>> t.ack([b]); t.committed((1, 2))
    0
    >>> t.ack([a]); t.committed((1, 2))
    200
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable

from forwarder.scan import FileKey


class Mark:
    """The end offset of a group of records of one file, and how many are not acked yet."""

    __slots__ = ("born", "generation", "group", "key", "offset", "pending", "size")

    def __init__(
        self,
        key: FileKey,
        offset: int,
        records: int,
        born: float,
        *,
        generation: int,
        size: int,
        group: str = "",
    ) -> None:
        self.key = key
        self.group = group  # the delivery stream its records go to
        self.offset = offset
        self.pending = records
        self.born = born  # monotonic time the group's first line was read
        self.generation = generation  # the file's truncation count when it was read
        self.size = size  # bytes of lines the group holds (in memory until acknowledged)


class AckTracker:
    """Per file, records in creation order; the committed offset follows the acked prefix."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[FileKey, deque[Mark]] = {}
        self._committed: dict[FileKey, int] = {}
        self._generation: dict[FileKey, int] = {}
        self._group: dict[FileKey, str] = {}  # the delivery stream of each file
        self._unacked: Counter[str] = Counter()  # records not acknowledged, per stream
        self._unacked_bytes: Counter[str] = Counter()  # their bytes of lines, per stream
        self._acks = 0
        self._started = self.last_ack = time.monotonic()  # start-up counts as an ack
        self._last_ack: dict[str, float] = {}  # per stream, once it had one
        self.idle = threading.Condition(self._lock)

    def start(self, key: FileKey, offset: int, group: str = "") -> None:
        """Begin tracking a file whose lines before `offset` are already delivered, and
        whose records go to the delivery stream `group`."""
        with self._lock:
            self._group[key] = group
            self._queues.setdefault(key, deque())
            self._committed.setdefault(key, offset)

    def mark(self, key: FileKey, offset: int, records: int, born: float, size: int = 0) -> Mark:
        """Register `records` new records of `key` that together end at `offset` and hold
        `size` bytes of lines."""
        with self._lock:
            group = self._group.get(key, "")
            generation = self._generation.get(key, 0)
            m = Mark(key, offset, records, born, generation=generation, size=size, group=group)
            self._queues[key].append(m)
            self._unacked[group] += records
            if records:
                self._unacked_bytes[group] += size
            self._settle(key)
        return m

    def ack(self, marks: Iterable[Mark]) -> None:
        """One record per mark is done (accepted, or skipped as undeliverable)."""
        with self._lock:
            now = time.monotonic()
            for m in marks:
                m.pending -= 1
                self._last_ack[m.group] = now
                self._unacked[m.group] -= 1
                if m.pending == 0:
                    self._unacked_bytes[m.group] -= m.size
                self._settle(m.key)
            self._acks += 1
            self.last_ack = now
            self.idle.notify_all()

    def truncated(self, key: FileKey) -> None:
        """The file was truncated in place: offsets of records read before no longer point
        into it. They are still delivered, but only newer records move the offset (from 0)."""
        with self._lock:
            self._generation[key] = self._generation.get(key, 0) + 1
            self._committed[key] = 0

    def _settle(self, key: FileKey) -> None:
        queue = self._queues.get(key)
        current = self._generation.get(key, 0)
        while queue and queue[0].pending == 0:
            mark = queue.popleft()
            if mark.generation == current:
                self._committed[key] = mark.offset

    def rekey(self, old: FileKey, new: FileKey) -> None:
        """Track `old`'s records in flight under `new` from now on (a file given up: its
        key, an inode number, may go to a new file while they wait)."""
        with self._lock:
            for table in (self._queues, self._committed, self._generation, self._group):
                if old in table:
                    table[new] = table.pop(old)  # type: ignore[index]
            for mark in self._queues.get(new, ()):
                mark.key = new

    def committed(self, key: FileKey) -> int:
        """Offset up to which every line of `key` is acknowledged."""
        with self._lock:
            return self._committed.get(key, 0)

    def snapshot(self) -> dict[FileKey, int]:
        """All committed offsets."""
        with self._lock:
            return dict(self._committed)

    def oldest_unacked(self, group: str | None = None) -> float | None:
        """Monotonic time the oldest unacknowledged line was read (None: all acknowledged),
        of all files or of the stream `group`."""
        with self._lock:
            borns = [
                q[0].born
                for key, q in self._queues.items()
                if q and (group is None or self._group.get(key, "") == group)
            ]
        return min(borns, default=None)

    def last_ack_of(self, group: str) -> float:
        """Monotonic time of the stream's last acknowledgement (start-up if none yet)."""
        with self._lock:
            return self._last_ack.get(group, self._started)

    def in_flight(self, key: FileKey) -> int:
        """Record groups of `key` not acknowledged yet."""
        with self._lock:
            return len(self._queues.get(key, ()))

    def unacked(self, group: str | None = None) -> int:
        """Records not acknowledged yet: of all files, or of the stream `group`."""
        with self._lock:
            return self._unacked[group] if group is not None else self._unacked.total()

    def unacked_bytes(self, group: str | None = None) -> int:
        """Bytes of lines in records not acknowledged yet (held in memory by the senders):
        of all files, or of the stream `group`."""
        with self._lock:
            if group is not None:
                return self._unacked_bytes[group]
            return self._unacked_bytes.total()

    def forget(self, key: FileKey) -> None:
        """Stop tracking a closed file whose records were all acknowledged."""
        with self._lock:
            self._queues.pop(key, None)
            self._group.pop(key, None)
            self._committed.pop(key, None)
            self._generation.pop(key, None)

    def wait_ack(self, timeout: float) -> None:
        """Block until the next acknowledgement, or `timeout` passes."""
        with self._lock:
            seen = self._acks
            self.idle.wait_for(lambda: self._acks != seen, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every record is acknowledged, or `timeout` passes."""
        with self._lock:
            return self.idle.wait_for(lambda: self._unacked.total() == 0, timeout)
