"""Rotation: when a rotated or deleted file is drained and closed, and what start-up recovers
of rotations that happened while the forwarder was down.

While running, a file whose path no longer leads to it (renamed by the runtime, or deleted)
keeps its descriptor and is *drained*: read on, as any file, until it has been quiet for the
grace period; then its last unterminated line and unfinished pieces are shipped (`final`
reads), and it is closed only once a fresh look at it shows every byte consumed. Reads wait
while the send buffer is full, so a drained file may stay open for as long as backpressure
lasts: its tail is not dropped — unless the *deleted* files held open exceed
--max-deleted-bytes or --max-deleted-files (their disk space is freed only when the
forwarder closes them): then the oldest are given up, counted and logged as an ERROR
(`deleted_to_give_up`; the choice between node disk pressure and loss is the operator's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from forwarder.offsets import Stored
from forwarder.scan import FileKey, Found, is_regular
from forwarder.tail import TailedFile

log = logging.getLogger("forwarder.rotation")

# kubelet compresses old rotated files to `.gz` through a `.tmp` file: neither holds lines.
NOT_LOGS = (".gz", ".tmp")
# A stored file not found where it was is looked for this many times, RECOVERY_PAUSE apart:
# dockerd renames .1 -> .2 -> ... one by one, so a file can be between names while its
# folder is read (missed once, found at the next look).
RECOVERY_LOOKS = 3
RECOVERY_PAUSE = 0.05
MIN_GRACE = 1.0  # seconds a rotated file must stay quiet, at least, before it is closed
# File times come from a coarse kernel clock (a few ms behind time.time()): a file written
# just after a scan began may show an earlier mtime.
MTIME_SLACK = 0.5


@dataclass(frozen=True)
class Drain:
    """The drain policy of rotated and deleted files."""

    grace: float

    @classmethod
    def for_scan_interval(cls, scan_interval: float) -> Drain:
        """Grace of max(1 s, 2 scan intervals): lines a runtime writes just after the rename
        are still read from the old file."""
        return cls(max(MIN_GRACE, 2 * scan_interval))

    def is_final(self, tailed: TailedFile, now: float) -> bool:
        """The file was rotated away or deleted (not merely unlinked from the glob's path: a
        file still at its own path may grow again), and has not grown for the grace period
        since: it will not grow again, so an unterminated last line may be shipped."""
        since = tailed.draining_since
        if since is None or now - max(since, tailed.last_growth) < self.grace:
            return False
        return not tailed.in_place()

    def can_close(self, tailed: TailedFile, now: float) -> bool:
        """Final, and every byte consumed (looked at now, not as of the last read)."""
        return self.is_final(tailed, now) and tailed.finished()


def recover_at_start(
    found: dict[FileKey, Found],
    stored: dict[FileKey, Stored],
    opened: Collection[FileKey],
    last_scan: float | None,
    max_line: int,
    *,
    dangling: Mapping[str, str],
) -> tuple[list[TailedFile], list[FileKey]]:
    """Files rotated while the forwarder was down, opened for draining; and the stored rows of
    files that are gone.

    `stored` holds the rows no live file claimed; `dangling` maps the targets of matched
    links that lead to no file now (kubelet renamed `0.log`, the runtime has not reopened
    it yet) to their paths. Two kinds of file are recovered:
    - a stored (dev, inode) found again next to where it was (`0.log.<ts>`, `-json.log.1`):
      drained from its stored offset;
    - a rotated sibling of a found file, a stored row or a dangling link that no open file
      is, modified after the last completed scan (less MTIME_SLACK): it was created after
      that scan and rotated before the forwarder came back (a crash right after a new pod
      started, two rotations while down), so it is read from its head. Older siblings were
      shipped already, or are history from before the forwarder ever ran. The key of a row
      whose file is gone is no proof: its inode was free, and may be this new file's.
    """
    drained: list[TailedFile] = []
    missing = dict(stored)
    for look in range(RECOVERY_LOOKS):
        if look:  # a rotation may have renamed the file while its folder was read
            time.sleep(RECOVERY_PAUSE)
        missing = _drain_rotated(missing, drained, max_line)
        if not missing:
            break
    if last_scan is not None:
        known = set(opened) | {tailed.key for tailed in drained}
        live = {os.path.realpath(item.path): item.path for item in found.values()}
        live |= {row.target: row.path for row in stored.values()}
        live |= {target: path for target, path in dangling.items() if target not in live}
        folders = Folders()
        for target, path in live.items():
            drained += unseen_rotated(target, path, last_scan, known, max_line, folders=folders)
    return drained, list(missing)


def unseen_rotated(
    target: str,
    path: str,
    scanned: float,
    known: set[FileKey],
    max_line: int,
    *,
    remembered: Mapping[FileKey, Stored] | None = None,
    folders: Folders | None = None,
) -> list[TailedFile]:
    """Rotated siblings of `target` that no scan saw (modified after the scan that began at
    wall time `scanned`, less MTIME_SLACK, and not in `known`), opened from their head to be
    drained: created and rotated between two scans, or while the forwarder was down (two
    rotations in a row, a new pod's first rotation). Their keys are added to `known`.

    `remembered`: rows of closed files. Their inodes are free, so a sibling with one of their
    keys resumes at the row's offset only if the row's fingerprint says it is that file.
    `folders`: the folder listings of one look at many files (each folder listed once)."""
    opened = []
    folders = folders or Folders()
    for rotated, key in folders.rotated_siblings(target, newer_than=scanned - MTIME_SLACK):
        if key in known:
            continue
        row = (remembered or {}).get(key)
        with contextlib.suppress(OSError):
            tailed = _open_rotated(
                key, rotated, path, target, row=row, max_line=max_line, warn=False
            )
            if tailed is not None:
                log.info("reading a rotated file no scan saw", extra={"file": rotated})
                opened.append(tailed)
                known.add(key)
    return opened


def _drain_rotated(
    rows: dict[FileKey, Stored], drained: list[TailedFile], max_line: int
) -> dict[FileKey, Stored]:
    """Open each row's file where it went (appended to `drained`); the rows not found. A file
    on the row's inode whose first bytes are not the row's is another file (ext4 gave the
    freed inode to it): not the row's, so not labelled with its path; the unseen-sibling
    look reads it under its own."""
    missing = {}
    for key, row in rows.items():
        rotated = find_rotated(key, row.target)
        try:
            tailed = rotated and _open_rotated(
                key, rotated, row.path, row.target, row=row, max_line=max_line, warn=False
            )
        except OSError:  # renamed again between the look and the open
            tailed = None
        if tailed and row.offset and tailed.offset != row.offset:
            tailed.close()
            tailed = None
        if not tailed:
            missing[key] = row
            continue
        log.info("draining file rotated while stopped", extra={"file": rotated})
        drained.append(tailed)
    return missing


def _open_rotated(
    key: FileKey,
    rotated: str,
    path: str,
    target: str,
    *,
    row: Stored | None,
    max_line: int,
    warn: bool = True,
) -> TailedFile | None:
    """Open a rotated file under the name it was globbed as and the path it had before its
    rotation (`target`), already draining."""
    tailed = TailedFile.open(key, rotated, row, max_line, warn)
    if tailed is None:
        return None
    tailed.rotated_from(path, target)
    return tailed


class Folders:
    """Folder listings for one look at the rotated siblings of many files: each folder is
    listed once and its names indexed by every prefix before a '.', so a look costs the
    file's own siblings, not the folder (thousands of new files in one flat folder)."""

    def __init__(self) -> None:
        self._index: dict[str, dict[str, list[str]]] = {}

    def rotated_siblings(self, target: str, newer_than: float) -> list[tuple[str, FileKey]]:
        """Rotated copies of `target` (0.log.<ts>, -json.log.<n>) modified after
        `newer_than`.

        Oldest first. Compressed ones (.gz, and kubelet's .tmp while it compresses) are
        skipped: runtimes compress only files they rotated long before.
        """
        directory, name = os.path.split(target)
        for look in range(RECOVERY_LOOKS):
            if look:  # a name vanished between the listing and its stat: renamed, look again
                time.sleep(RECOVERY_PAUSE)
                self._index.pop(directory, None)
            siblings, complete = self._siblings(directory, name, newer_than)
            if complete:
                break
        return [(path, key) for _, path, key in sorted(siblings)]

    def _names(self, directory: str, name: str) -> list[str]:
        index = self._index.get(directory)
        if index is None:
            index = self._index[directory] = {}
            try:
                listed = os.listdir(directory)
            except OSError:
                listed = []
            for entry in listed:
                dot = entry.find(".")
                while dot > 0:
                    index.setdefault(entry[:dot], []).append(entry)
                    dot = entry.find(".", dot + 1)
        return index.get(name, [])

    def _siblings(
        self, directory: str, name: str, newer_than: float
    ) -> tuple[list[tuple[float, str, FileKey]], bool]:
        """(the siblings, True unless a listed name had vanished by its stat)."""
        siblings, complete = [], True
        for sibling in self._names(directory, name):
            if sibling.endswith(NOT_LOGS):
                continue
            path = os.path.join(directory, sibling)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                complete = False
                continue
            except OSError:
                continue
            if is_regular(st.st_mode) and st.st_mtime > newer_than:
                siblings.append((st.st_mtime, path, (st.st_dev, st.st_ino)))
        return siblings, complete


def find_rotated(key: FileKey, target: str) -> str | None:
    """The file `key` next to where it was (e.g. 0.log.<ts>, -json.log.1), if it still exists."""
    directory = os.path.dirname(target)
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for name in names:
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == key:
                return path
    return None


def deleted_to_give_up(
    reading: list[tuple[TailedFile, int]], awaiting: int, max_bytes: int, max_files: int
) -> list[TailedFile]:
    """The deleted files to give up, oldest rotation first, so that the deleted files the
    forwarder holds open take at most `max_bytes` of disk and `max_files` descriptors.

    `reading`: (file, size) of the deleted files still being read; `awaiting`: bytes of
    deleted files read to their end that wait for acknowledgements (they cannot be given
    up: their lines are in flight, and their descriptors close with the last acknowledgement).

    >>> class F:
    ...     def __init__(self, name, since): self.path, self.draining_since = name, since
    >>> old, new = F("old", 1.0), F("new", 2.0)
    >>> [f.path for f in deleted_to_give_up([(new, 600), (old, 500)], 0, 1000, 10)]
    ['old']
    >>> [f.path for f in deleted_to_give_up([(new, 600), (old, 500)], 0, 2000, 1)]
    ['old']
    >>> deleted_to_give_up([(new, 600), (old, 500)], 0, 2000, 10)
    []
    """
    total = awaiting + sum(size for _, size in reading)
    count = len(reading)
    given_up = []
    for tailed, size in sorted(reading, key=lambda item: item[0].draining_since or 0.0):
        if total <= max_bytes and count <= max_files:
            break
        given_up.append(tailed)
        total -= size
        count -= 1
    return given_up
