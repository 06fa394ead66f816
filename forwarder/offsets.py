"""Offsets storage: committed read positions in SQLite, keyed by (dev, inode), with the
fingerprint that proves a stored offset still belongs to the file.

An inode number is reused as soon as a file is deleted, so (dev, inode) alone could resume a
new file at the old file's offset and skip its first bytes. Each row also keeps a hash of the
file's first bytes (up to FINGERPRINT_BYTES); an offset is resumed only when the file still
starts with those bytes and is at least that long. Docker and CRI lines start with a
timestamp, so two different files never share their first line.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import NamedTuple

from forwarder.config import StartupError
from forwarder.scan import FileKey

FINGERPRINT_BYTES = 1024
# A Docker json-file line ends with its time: the whole first line (up to this) is hashed
# too, or two files whose first kilobyte is the same message would look alike.
FIRST_LINE_BYTES = 32 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    path TEXT NOT NULL,
    target TEXT NOT NULL,
    offset INTEGER NOT NULL,
    updated REAL NOT NULL,
    fp_len INTEGER NOT NULL DEFAULT 0,
    fp TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dev, ino)
)
"""
# Databases written before fingerprints existed get the columns (rows without one are
# checked by size only).
_ADD_FINGERPRINT = (
    "ALTER TABLE offsets ADD COLUMN fp_len INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE offsets ADD COLUMN fp TEXT NOT NULL DEFAULT ''",
)
# `last_save`: when offsets last changed. `last_scan`: when the last scan whose files all have
# rows began — a file modified after it may hold lines no row covers (start-up recovery).
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL)"


class Fingerprint(NamedTuple):
    """A hash of a file's first `length` bytes."""

    length: int
    digest: str

    @classmethod
    def of(cls, fd: int, size: int) -> Fingerprint:
        """The fingerprint of an open file of `size` bytes (see `take`)."""
        return cls.take(fd, size)[0]

    @classmethod
    def take(cls, fd: int, size: int) -> tuple[Fingerprint, bool]:
        """(the fingerprint of the file's first FINGERPRINT_BYTES, or of its whole first line
        when longer, up to FIRST_LINE_BYTES; True when it will not grow: it holds both, or
        the first line is longer than FIRST_LINE_BYTES)."""
        head = os.pread(fd, min(size, FIRST_LINE_BYTES), 0) if size else b""
        line_end = head.find(b"\n") + 1
        length = max(min(len(head), FINGERPRINT_BYTES), line_end)
        settled = len(head) == FIRST_LINE_BYTES or (line_end > 0 and length >= FINGERPRINT_BYTES)
        return cls(length, _digest(head[:length])), settled

    def matches(self, fd: int, size: int) -> bool:
        """The open file still starts with the bytes this fingerprint was taken of."""
        if self.length == 0:
            return True
        return size >= self.length and _digest(os.pread(fd, self.length, 0)) == self.digest


def _digest(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=16).hexdigest()


class Stored(NamedTuple):
    """A stored row: the path that matched, the file it led to, the committed offset."""

    path: str
    target: str
    offset: int
    fingerprint: Fingerprint = Fingerprint(0, "")

    def applies_to(self, fd: int, size: int) -> bool:
        """This offset can resume the open file: it is no longer than the file, and the file
        starts as the one the offset was saved for did. A fingerprint shorter than the offset
        (or than FINGERPRINT_BYTES) cannot vouch for it; rows from before fingerprints
        existed (no digest) are checked by size only."""
        fp = self.fingerprint
        if fp.digest and fp.length < min(self.offset, FINGERPRINT_BYTES):
            return False
        return self.offset <= size and fp.matches(fd, size)


class OffsetsDB:
    """Committed read positions, persisted with the stdlib sqlite3 module."""

    def __init__(self, path: str) -> None:
        """Open (or create) the database at `path`, and lock it for this process alone.

        Raises StartupError, naming the path, when its folder does not exist (it is not
        created: a missing volume would lose offsets at every restart), when it is a folder,
        not a database, not writable, or locked by another forwarder.
        """
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StartupError(
                f"--db {path}: the folder {parent} does not exist (create it, or mount the "
                "volume that keeps offsets across restarts there)"
            )
        if os.path.isdir(path):
            raise StartupError(f"--db {path}: is a folder, not a database file")
        self._lock = _lock(path)
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(_SCHEMA)
            self.conn.execute(_META_SCHEMA)
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(offsets)")}
            if "fp" not in columns:
                for statement in _ADD_FINGERPRINT:
                    self.conn.execute(statement)
        except sqlite3.Error as exc:
            os.close(self._lock)
            message = f"--db {path}: cannot be used as the offsets database: {exc}"
            raise StartupError(message) from None

    def load(self) -> dict[FileKey, Stored]:
        """Every stored row by (dev, inode)."""
        rows = self.conn.execute("SELECT dev, ino, path, target, offset, fp_len, fp FROM offsets")
        return {
            (dev, ino): Stored(path, target, off, Fingerprint(fp_len, fp))
            for dev, ino, path, target, off, fp_len, fp in rows
        }

    def save(self, entries: Iterable[tuple[FileKey, Stored]], scanned: float | None = None) -> None:
        """Upsert rows in one transaction; with `scanned`, the wall-clock start of the last
        scan whose files are all among the rows saved so far."""
        now = time.time()
        rows = [
            (k[0], k[1], st.path, st.target, st.offset, now, *st.fingerprint) for k, st in entries
        ]
        if not rows and scanned is None:
            return
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO offsets (dev, ino, path, target, offset, updated, fp_len, fp) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dev, ino) DO UPDATE SET "
                "path = excluded.path, target = excluded.target, offset = excluded.offset, "
                "updated = excluded.updated, fp_len = excluded.fp_len, fp = excluded.fp",
                rows,
            )
            meta = [("last_save", now)] if rows else []
            meta += [("last_scan", scanned)] if scanned is not None else []
            self.conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                meta,
            )

    def last_scan(self) -> float | None:
        """Wall-clock start of the last scan whose files all had rows saved (None for a new
        database; a database from before this was kept gives the time of its last save)."""
        for name in ("last_scan", "last_save"):
            row = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            if row:
                return float(row[0])
        return None

    def delete(self, keys: Iterable[FileKey]) -> None:
        """Forget files that are gone for good."""
        rows = list(keys)
        if rows:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("DELETE FROM offsets WHERE dev = ? AND ino = ?", rows)

    def close(self) -> None:
        """Close the database and release its lock."""
        self.conn.close()
        os.close(self._lock)


def _lock(path: str) -> int:
    """An exclusive lock on the database file (flock: apart from SQLite's own locks), held
    until close; two forwarders on one database would both ship the same files."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartupError(f"--db {path}: cannot be opened: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(
            f"--db {path}: another forwarder uses this database (it is locked); give each "
            "forwarder its own --db"
        ) from None
    return fd
