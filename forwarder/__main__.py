"""Entry point and main loop: scan, read, pack, flush, commit offsets; signals and shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from forwarder import logs
from forwarder.batcher import Batcher, SendQueue
from forwarder.config import Config, parse_config, resolve_region
from forwarder.metrics import Metrics, serve
from forwarder.offsets import AckTracker, OffsetsDB, Stored
from forwarder.scan import FileKey, Found, is_regular, scan
from forwarder.sender import Sender
from forwarder.tail import TailedFile

log = logging.getLogger("forwarder")

COMMIT_INTERVAL = 0.2  # seconds between offset saves (bounds re-sends after a crash)
MAX_POLL = 0.2  # seconds the loop sleeps when no file had anything new
READS_PER_FILE = 8  # chunks read from one file before moving on (fairness)


class Forwarder:
    """Owns the files, the batcher, the senders and the offsets; runs the main loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.metrics.stale_after = max(30.0, 10 * cfg.scan_interval)
        self.db = OffsetsDB(cfg.db)
        self.stored = self.db.load()
        self.last_save = self.db.last_save()
        self.tracker = AckTracker()
        self.queue = SendQueue(cfg.flush_interval)
        self.batcher = Batcher(cfg, self.tracker, self.queue)
        self.stop = threading.Event()
        self.hard_stop = threading.Event()
        self.sender = Sender(cfg, self.queue, self.tracker, self.metrics, self.hard_stop)
        self.files: dict[FileKey, TailedFile] = {}
        self.closed: dict[FileKey, TailedFile] = {}  # drained, waiting for their acks
        self.saved: dict[FileKey, int] = {}
        self.buffered = 0
        self.poll = min(MAX_POLL, max(cfg.scan_interval, 0.01), max(cfg.flush_interval, 0.01))

    def run(self) -> int:
        """Run until stopped (or until everything is delivered with --exit-on-eof)."""
        self.sender.start()
        first = True
        next_scan = next_commit = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_scan and not (self.cfg.exit_on_eof and not first):
                found = scan(self.cfg.paths, self.cfg.excludes, self.cfg.self_prefix)
                self.reconcile(found)
                if first:
                    self.recover_rotated(found)
                    self.prune_unseen()
                    first = False
                next_scan = now + self.cfg.scan_interval
            progressed = self.read_all(now)
            self.batcher.flush_aged(now)
            self.close_drained(now)
            if now >= next_commit:
                self.commit()
                next_commit = now + COMMIT_INTERVAL
            self.metrics.beat()
            if self.cfg.exit_on_eof and self.all_read():
                return self.finish(wait=None)
            if not progressed and not self.has_room(self.cfg.read_size):
                self.tracker.wait_ack(self.poll)  # the buffer is full: resume on the next ack
            elif not progressed:
                self.stop.wait(self.poll)
        return self.finish(wait=self.cfg.shutdown_timeout)

    def reconcile(self, found: dict[FileKey, Found]) -> None:
        """Open new files; start draining files whose path no longer leads to them."""
        for key, item in found.items():
            tailed = self.files.get(key)
            if tailed is None and key not in self.closed:
                self.open_file(item)
            elif tailed is not None:
                tailed.path = item.path
                tailed.draining_since = None
        for key, tailed in self.files.items():
            if key not in found:
                tailed.start_draining()
        self.metrics.files.set(len(self.files))

    def open_file(self, item: Found) -> None:
        """Start tailing a new file, from its stored offset if the same (dev, inode) has one."""
        # Stored offsets apply once, at start: a later file with a reused inode starts at 0.
        stored = self.stored.pop(item.key, None)
        offset = stored.offset if stored else 0
        tailed = TailedFile.open(item.key, item.path, offset, self.cfg.max_line_bytes)
        if tailed is None:
            return
        self.add_file(tailed)

    def add_file(self, tailed: TailedFile) -> None:
        """Track an opened file."""
        self.files[tailed.key] = tailed
        self.batcher.track(tailed.key, tailed.src, tailed.offset)
        log.info("tailing file", extra={"path": tailed.path, "offset": tailed.offset})

    def recover_rotated(self, found: dict[FileKey, Found]) -> None:
        """At start: read rotated files that were written after offsets were last saved.

        Such a file was created and rotated away while the forwarder was down (two
        rotations, or a new pod rotating), so no offset row knows it: it is read from its
        head. Files written before the last save were shipped already, or are history from
        before the forwarder ever ran.
        """
        if self.last_save is None:
            return
        live = {os.path.realpath(item.path): item.path for item in found.values()}
        live |= {stored.target: stored.path for stored in self.stored.values()}
        known = set(self.files) | set(self.stored)
        for target, path in live.items():
            for rotated, key in rotated_siblings(target, newer_than=self.last_save):
                if key in known:
                    continue
                tailed = TailedFile.open(key, rotated, 0, self.cfg.max_line_bytes)
                if tailed is None:
                    continue
                tailed.path, tailed.src = path, os.path.basename(path)
                log.info("reading file created and rotated while stopped", extra={"file": rotated})
                self.add_file(tailed)
                tailed.start_draining()
                known.add(key)

    def prune_unseen(self) -> None:
        """At start: drain files rotated while we were down; forget files that are gone."""
        gone = []
        for key, stored in self.stored.items():
            rotated = find_rotated(key, stored.target)
            tailed = rotated and TailedFile.open(
                key, rotated, stored.offset, self.cfg.max_line_bytes
            )
            if not tailed:
                gone.append(key)
                continue
            tailed.path, tailed.src = stored.path, os.path.basename(stored.path)
            log.info("draining file rotated while stopped", extra={"file": rotated})
            self.add_file(tailed)
            tailed.start_draining()
        self.db.delete(gone)
        self.stored.clear()

    def read_all(self, now: float) -> bool:
        """Read available lines from every file while the buffer has room."""
        self.buffered = self.compute_buffered()
        progressed = False
        size = self.cfg.read_size
        for tailed in list(self.files.values()):
            for _ in range(READS_PER_FILE):
                if self.stop.is_set() or not self.has_room(size):
                    break
                final = self.cfg.exit_on_eof or self.drain_quiet(tailed, now)
                chunk = tailed.read(size, final)
                if tailed.truncations:
                    self.metrics.truncations.inc(tailed.truncations)
                    tailed.truncations = 0
                if chunk is None:
                    break
                progressed = True
                self.buffered += chunk.consumed
                self.metrics.bytes_read.inc(chunk.consumed)
                self.metrics.lines_read.inc(chunk.data.count(b"\n"))
                if chunk.oversize:
                    self.metrics.oversize.inc(chunk.oversize)
                    log.warning("oversize line", extra={"path": tailed.path})
                self.batcher.add(tailed.key, chunk, now)
        self.metrics.buffered.set(self.buffered)
        return progressed

    def has_room(self, size: int) -> bool:
        """Reading `size` more bytes keeps the unacknowledged bytes within the limit."""
        return self.buffered == 0 or self.buffered + size <= self.cfg.max_buffer_bytes

    def compute_buffered(self) -> int:
        """File bytes read but not acknowledged, over open and closed-but-unacked files."""
        committed = self.tracker.snapshot()
        total = 0
        for group in (self.files, self.closed):
            for key, tailed in group.items():
                total += max(0, tailed.offset - committed.get(key, tailed.offset))
        return total

    def drain_quiet(self, tailed: TailedFile, now: float) -> bool:
        """A rotated/deleted file that stayed quiet for a grace period will not grow again."""
        grace = max(1.0, 2 * self.cfg.scan_interval)
        return tailed.draining_since is not None and now - tailed.draining_since >= grace

    def close_drained(self, now: float) -> None:
        """Close rotated/deleted files read to their end after the grace period."""
        for key, tailed in list(self.files.items()):
            if tailed.at_eof and self.drain_quiet(tailed, now):
                self.batcher.flush_file(key)
                tailed.close()
                self.closed[key] = self.files.pop(key)
                self.metrics.files.set(len(self.files))
                log.info("closed drained file", extra={"path": tailed.path})

    def all_read(self) -> bool:
        """--exit-on-eof: every file read to its end."""
        return all(t.at_eof and not t.joiner.pending for t in self.files.values())

    def commit(self) -> None:
        """Save changed committed offsets; forget closed files once fully acknowledged."""
        committed = self.tracker.snapshot()
        rows = []
        for key, tailed in self.files.items():
            offset = committed.get(key, tailed.offset)
            self.metrics.lag.labels(tailed.src).set(max(0, tailed.size - offset))
            if self.saved.get(key) != offset:
                rows.append((key, Stored(tailed.path, tailed.target, offset)))
                self.saved[key] = offset
        self.db.save(rows)
        done = [k for k in self.closed if self.tracker.in_flight(k) == 0]
        for key in done:
            tailed = self.closed.pop(key)
            self.tracker.forget(key)
            self.batcher.untrack(key)
            self.saved.pop(key, None)
            if tailed.src not in {t.src for t in self.files.values()}:
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(tailed.src)
        self.db.delete(done)

    def wait_delivered(self, wait: float | None) -> bool:
        """Wait for every acknowledgement: at most `wait` s; None = until done or signalled."""
        if wait is None:
            while not self.tracker.wait_idle(0.5):
                if self.stop.is_set():
                    return self.tracker.wait_idle(self.cfg.shutdown_timeout)
            return True
        return self.tracker.wait_idle(wait)

    def finish(self, wait: float | None) -> int:
        """Flush open records, wait for acknowledgements (at most `wait` s), save offsets."""
        self.batcher.flush_all()
        self.queue.flush()
        delivered = self.wait_delivered(wait)
        if not delivered:
            log.warning("shutdown timeout: unacknowledged lines will be re-sent on restart")
        self.hard_stop.set()
        self.queue.close()
        self.commit()
        self.db.close()
        for tailed in self.files.values():
            tailed.close()
        log.info("stopped", extra={"delivered": delivered, "records": self.batcher.records_made})
        return 0


def rotated_siblings(target: str, newer_than: float) -> list[tuple[str, FileKey]]:
    """Rotated copies of `target` (0.log.<ts>, -json.log.<n>) modified after `newer_than`.

    Oldest first. Compressed ones (.gz) are skipped: runtimes compress only files they
    rotated long before.
    """
    directory, name = os.path.split(target)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    siblings = []
    for sibling in names:
        if not sibling.startswith(name + ".") or sibling.endswith(".gz"):
            continue
        path = os.path.join(directory, sibling)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if is_regular(st.st_mode) and st.st_mtime > newer_than:
                siblings.append((st.st_mtime, path, (st.st_dev, st.st_ino)))
    return [(path, key) for _, path, key in sorted(siblings)]


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


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    cfg = resolve_region(parse_config(argv))
    logs.setup(cfg.log_level)
    fwd = Forwarder(cfg)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal received, shutting down", extra={"signal": signum})
        fwd.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if cfg.http_port:
        serve(fwd.metrics, cfg.http_host, cfg.http_port)
    log.info("starting", extra={"stream": cfg.delivery_stream, "paths": cfg.paths})
    return fwd.run()


if __name__ == "__main__":
    sys.exit(main())
