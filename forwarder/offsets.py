"""Offsets: the SQLite database keyed by (dev, inode), and acknowledgement tracking.

An offset is committed only once Firehose acknowledged every record holding lines before it,
so a crash loses nothing and re-sends at most what was in flight (at-least-once).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from forwarder.scan import FileKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    path TEXT NOT NULL,
    target TEXT NOT NULL,
    offset INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (dev, ino)
)
"""
# When offsets last changed: a file written after it holds lines no offset covers.
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL)"


class Stored(NamedTuple):
    """A stored row: the path that matched, the file it led to, the committed offset."""

    path: str
    target: str
    offset: int


class OffsetsDB:
    """Committed read positions, persisted with the stdlib sqlite3 module."""

    def __init__(self, path: str) -> None:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(_SCHEMA)
        self.conn.execute(_META_SCHEMA)

    def load(self) -> dict[FileKey, Stored]:
        """Every stored row by (dev, inode)."""
        rows = self.conn.execute("SELECT dev, ino, path, target, offset FROM offsets")
        return {(dev, ino): Stored(path, target, off) for dev, ino, path, target, off in rows}

    def save(self, entries: Iterable[tuple[FileKey, Stored]]) -> None:
        """Upsert rows in one transaction."""
        now = time.time()
        rows = [(k[0], k[1], st.path, st.target, st.offset, now) for k, st in entries]
        if not rows:
            return
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO offsets (dev, ino, path, target, offset, updated) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dev, ino) DO UPDATE SET "
                "path = excluded.path, target = excluded.target, offset = excluded.offset, "
                "updated = excluded.updated",
                rows,
            )
            self.conn.execute(
                "INSERT INTO meta (name, value) VALUES ('last_save', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (now,),
            )

    def last_save(self) -> float | None:
        """Wall-clock time offsets were last saved (None for a new database)."""
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'last_save'").fetchone()
        return float(row[0]) if row else None

    def delete(self, keys: Iterable[FileKey]) -> None:
        """Forget files that are gone for good."""
        rows = list(keys)
        if rows:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("DELETE FROM offsets WHERE dev = ? AND ino = ?", rows)

    def close(self) -> None:
        """Close the database."""
        self.conn.close()


class Mark:
    """The end offset of a group of records of one file, and how many are not acked yet."""

    __slots__ = ("key", "offset", "pending")

    def __init__(self, key: FileKey, offset: int, records: int) -> None:
        self.key = key
        self.offset = offset
        self.pending = records


class AckTracker:
    """Per file, records in creation order; the committed offset follows the acked prefix."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[FileKey, deque[Mark]] = {}
        self._committed: dict[FileKey, int] = {}
        self._unacked = 0
        self._acks = 0
        self.idle = threading.Condition(self._lock)

    def start(self, key: FileKey, offset: int) -> None:
        """Begin tracking a file whose lines before `offset` are already delivered."""
        with self._lock:
            self._queues.setdefault(key, deque())
            self._committed.setdefault(key, offset)

    def mark(self, key: FileKey, offset: int, records: int) -> Mark:
        """Register `records` new records of `key` that together end at `offset`."""
        m = Mark(key, offset, records)
        with self._lock:
            self._queues[key].append(m)
            self._unacked += records
            self._settle(key)
        return m

    def ack(self, marks: Iterable[Mark]) -> None:
        """Firehose accepted one record per mark: advance committed offsets over acked prefixes."""
        with self._lock:
            for m in marks:
                m.pending -= 1
                self._unacked -= 1
                self._settle(m.key)
            self._acks += 1
            self.idle.notify_all()

    def _settle(self, key: FileKey) -> None:
        queue = self._queues.get(key)
        while queue and queue[0].pending == 0:
            self._committed[key] = queue.popleft().offset

    def committed(self, key: FileKey) -> int:
        """Offset up to which every line of `key` is acknowledged."""
        with self._lock:
            return self._committed.get(key, 0)

    def snapshot(self) -> dict[FileKey, int]:
        """All committed offsets."""
        with self._lock:
            return dict(self._committed)

    def in_flight(self, key: FileKey) -> int:
        """Records of `key` not acknowledged yet."""
        with self._lock:
            return len(self._queues.get(key, ()))

    def unacked(self) -> int:
        """Records of all files not acknowledged yet."""
        with self._lock:
            return self._unacked

    def forget(self, key: FileKey) -> None:
        """Stop tracking a closed file whose records were all acknowledged."""
        with self._lock:
            self._queues.pop(key, None)
            self._committed.pop(key, None)

    def wait_ack(self, timeout: float) -> None:
        """Block until the next acknowledgement, or `timeout` passes."""
        with self._lock:
            seen = self._acks
            self.idle.wait_for(lambda: self._acks != seen, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every record is acknowledged, or `timeout` passes."""
        with self._lock:
            return self.idle.wait_for(lambda: self._unacked == 0, timeout)
