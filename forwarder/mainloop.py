"""The main loop: scan, read (fairly, within the buffer), pack, flush, commit offsets, stop."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from forwarder.acks import AckTracker
from forwarder.batcher import Batcher
from forwarder.catch_up import CatchUp
from forwarder.config import Config
from forwarder.health import Health
from forwarder.lanes import Lane, make_lanes
from forwarder.memory import HeapTrimmer
from forwarder.metrics import Metrics
from forwarder.offsets import OffsetsDB, Stored
from forwarder.pod_metadata import ApiAccess, PodLookup, PodMetadataWatcher
from forwarder.rate_limited_log import RateLimitedLog
from forwarder.rotation import (
    Drain,
    Folders,
    deleted_to_give_up,
    recover_at_start,
    unseen_rotated,
)
from forwarder.routing import Router
from forwarder.scan import (
    MISSING_TARGET,
    FileKey,
    Found,
    ScanError,
    any_match,
    dangling_links,
    scan,
)
from forwarder.tail import Chunk, TailedFile

log = logging.getLogger("forwarder")

COMMIT_INTERVAL = 0.2  # seconds between offset saves (bounds re-sends after a crash)
MAX_POLL = 0.2  # seconds the loop sleeps when no file had anything new
METADATA_STARTUP_WAIT = 5.0  # seconds the first read waits for the pod list (never longer)
READS_PER_FILE = 8  # rounds of one chunk per file in one pass over the files
# Closed files whose offset and fingerprint are kept in memory, newest (~460 bytes each: a
# bound on what pod churn adds). One found again after it was dropped is read from its head
# (duplicates, never loss).
FORGOTTEN_FILES = 1024
NOTHING_TO_READ_LOG_INTERVAL = 60.0  # seconds between two warnings that nothing can be read
GIVEN_UP_DEV = -1  # the device number of the keys given-up files' records wait under


class Forwarder:
    """Owns the files, the batcher, the senders and the offsets; runs the main loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.trim_heap = HeapTrimmer(cfg.malloc_trim_interval)
        self.health = Health(self.metrics, max(30.0, 10 * cfg.scan_interval), cfg.max_delivery_lag)
        self.db = OffsetsDB(cfg.db)
        self.stored = self.db.load()
        self.last_scan = self.db.last_scan()
        self.scanned: float | None = None  # start of the last scan, saved with the next rows
        self.scanned_at: float | None = None  # start of the last completed scan
        self.tracker = AckTracker()
        self.stop = threading.Event()
        self.hard_stop = threading.Event()
        self.router = Router(cfg.delivery_stream, cfg.routes)
        self.lanes = make_lanes(
            cfg, self.router.streams, self.tracker, self.metrics, self.hard_stop
        )
        for stream in self.lanes:
            self.metrics.deleted_held.labels(stream).set(0)
            self.metrics.deleted_limit.labels(stream).set(self.deleted_share()[0])
        self.pods = self._pod_metadata(cfg)
        self.batcher = Batcher(
            cfg, self.tracker, {s: lane.queue for s, lane in self.lanes.items()}, self.pods,
            on_cut=self.metrics.cut_lines.inc, on_raw_limit=self.metrics.raw_limit_closes.inc,
        )  # fmt: skip
        catch_up = cfg.compression == "zstd" and cfg.zstd_catch_up_level != cfg.zstd_level
        self.catch_up = CatchUp() if catch_up else None
        self.metrics.zstd_level.set(cfg.zstd_level if cfg.compression == "zstd" else 0)
        self.health.senders_alive = lambda: all(x.sender.alive() for x in self.lanes.values())
        self.drain = Drain.for_scan_interval(cfg.scan_interval)
        self.files: dict[FileKey, TailedFile] = {}
        # Drained, waiting for their acks. Their descriptors stay open until then, so the file
        # system cannot give their inode numbers to new files meanwhile (ext4, xfs reuse them
        # at once): a found key is in `closed` only if it is that very file.
        self.closed: dict[FileKey, TailedFile] = {}
        self.saved: dict[FileKey, int] = {}
        # Files closed once acknowledged, by key: if one is found again (its path came back),
        # it resumes where it was, when its fingerprint says it is the same file.
        self.forgotten: OrderedDict[FileKey, Stored] = OrderedDict()
        self.given_up = 0  # files given up so far (their records' keys)
        self.unreadable: dict[str, str] = {}  # matched paths that lead to no file, -> reason
        self.unreadable_warned: set[str] = set()  # of them, logged (at two scans in a row)
        self.unopenable: dict[str, str] = {}  # found files that failed to open, -> reason
        self.said = RateLimitedLog(NOTHING_TO_READ_LOG_INTERVAL)
        self.cursor = 0  # index of the file that reads first in the next pass (round-robin)
        self.poll = min(MAX_POLL, max(cfg.scan_interval, 0.01), max(cfg.flush_interval, 0.01))

    def _pod_metadata(self, cfg: Config) -> PodLookup | None:
        """The pod watcher when --kubernetes-metadata is on (started by run())."""
        if not cfg.kubernetes_metadata or cfg.node_name is None:
            return None
        access = ApiAccess.in_cluster(cfg.kubernetes_api, cfg.kubernetes_token_file)
        watcher = PodMetadataWatcher(access, cfg.node_name, cfg.kubernetes_annotations)
        return PodLookup(watcher, self.metrics.records_without_metadata.inc)

    def run(self) -> int:
        """Run until stopped (or until everything is delivered with --exit-on-eof)."""
        for lane in self.lanes.values():
            lane.sender.start()
        if self.pods is not None:
            # Give the first list a moment, so a backlog goes out with its pods' metadata.
            self.pods.watcher.start().synced.wait(METADATA_STARTUP_WAIT)
        first = True
        next_scan = next_commit = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_scan and not (self.cfg.exit_on_eof and not first):
                first = not self.scan_files(first) and first  # recovery needs a whole scan
                next_scan = now + self.cfg.scan_interval
            progressed = self.read_all(now)
            self.flush_stale_partials(now)
            self.batcher.flush_aged(now)
            self.close_drained(now)
            if now >= next_commit:
                self.give_up_deleted(now)
                self.commit()
                self.check_catch_up(now)
                next_commit = now + COMMIT_INTERVAL
            for lane in self.lanes.values():
                lane.sender.revive()
            self.trim_heap(now)
            self.watch_buffer(now)
            self.health.beat()
            if self.cfg.exit_on_eof and self.all_read():
                return self.finish(wait=None)
            if not progressed and self.any_lane_full():
                self.tracker.wait_ack(self.poll)  # a buffer is full: look again on the next ack
            elif not progressed:
                self.stop.wait(self.poll)
        return self.finish(wait=self.cfg.shutdown_timeout)

    # ----- files

    def scan_files(self, first: bool) -> bool:
        """Glob, open new files, drain vanished ones; at start, recover what was rotated while
        stopped. The scan's start time is saved with the next offsets (recovery uses it).
        False when the scan failed (counted, logged at most once a minute): nothing changes."""
        started = time.time()
        unreadable: dict[str, str] = {}
        try:
            found = scan(self.cfg.paths, self.cfg.excludes, self.cfg.self_prefix, unreadable)
        except ScanError as exc:  # nothing seen is not everything gone: change nothing
            self.metrics.scan_errors.inc()
            if self.health.scans_failing is None:
                self.health.scans_failing = (time.monotonic(), str(exc))
            if self.said.due("scan error") is not None:
                log.error("scan failed, files kept as they are", extra={"error": str(exc)})
            return False
        self.health.scans_failing = None
        self.unopenable.clear()
        self.reconcile(found)
        self.report_unreadable(unreadable | self.unopenable)
        if first:
            self.recover(found, dangling_links(unreadable))
        self.scanned = self.scanned_at = started
        self.report_nothing_to_read(found)
        return True

    def report_nothing_to_read(self, found: dict[FileKey, Found]) -> None:
        """When no path matches at all, or every matched file is unreadable: /readyz fails
        with the reason, and a WARNING says it (once a minute while it lasts)."""
        why = None
        if not found and not self.unreadable and not any_match(self.cfg.paths):
            why = f"no file matches --path {','.join(self.cfg.paths)}"
        elif not self.files and self.unreadable:
            why = f"every matched path is unreadable ({len(self.unreadable)})"
        self.health.nothing_to_read = why
        if why is not None and self.said.due("nothing to read") is not None:
            log.warning("nothing to read: " + why, extra={"paths": self.cfg.paths})

    def reconcile(self, found: dict[FileKey, Found]) -> None:
        """Open new files; start draining files whose path no longer leads to them."""
        opened = []
        for key, item in found.items():
            tailed = self.files.get(key) or self.closed.pop(key, None)
            if tailed is None:
                if (new := self.open_file(item)) is not None:
                    opened.append(new)
                continue
            if tailed.draining_since is not None:  # its path leads to it again: tail it on
                log.info("file found again, tailing on", extra={"path": item.path})
            self.files[key] = tailed
            tailed.found_at(item.path)
        rotated = [t for key, t in self.files.items() if key not in found and t.start_draining()]
        if self.scanned_at is not None and (rotated or opened):
            self.open_unseen_rotations(rotated + opened, self.scanned_at)
        self.metrics.files.set(len(self.files))

    def open_unseen_rotations(self, changed: list[TailedFile], scanned: float) -> None:
        """A file just rotated away, or a new file at a path: a file created after the
        previous scan and rotated before this one is read from its head too (two rotations
        between two scans; a new pod's first file rotated before any scan saw it; a file
        created while a scan found its path's link dangling, mid-rotation, and rotated
        before the next). A forgotten key may be a new file's (ext4 reuses a freed inode at
        once): only files held open are surely known."""
        known = set(self.files) | set(self.closed)
        folders = Folders()
        for tailed in changed:
            for unseen in unseen_rotated(
                tailed.target,
                tailed.path,
                scanned,
                known,
                self.cfg.max_line_bytes,
                remembered=self.forgotten,
                folders=folders,
            ):
                self.forgotten.pop(unseen.key, None)
                self.add_file(unseen)

    def report_unreadable(self, unreadable: dict[str, str]) -> None:
        """Warn once per matched path that leads to no readable file; keep their count in a
        gauge.

        Usually a pod's log removed between kubelet's two deletions; on a Docker Engine node
        without /var/lib/docker/containers mounted, every file (docs/deploy.md); a file the
        forwarder may not read; a FIFO or other non-regular file. A link to no file is
        warned about only when two scans in a row find it so: kubelet's rotation leaves it
        dangling until the runtime reopens `0.log`, a moment a scan can fall into.
        """
        lasting = {
            path
            for path, reason in unreadable.items()
            if reason != MISSING_TARGET or path in self.unreadable
        }
        for path in sorted(lasting - self.unreadable_warned):
            log.warning(
                "matched path leads to no readable file",
                extra={"path": path, "reason": unreadable[path]},
            )
        self.unreadable_warned = lasting
        self.unreadable = unreadable
        self.metrics.unreadable_files.set(len(unreadable))

    def open_file(self, item: Found) -> TailedFile | None:
        """Start tailing a new file, from its stored offset if that belongs to it."""
        stored = self.stored.get(item.key)
        forgotten = self.forgotten.pop(item.key, None)  # a reused inode, unless it matches
        row, warn = (stored, True) if stored is not None else (forgotten, False)
        try:
            tailed = TailedFile.open(item.key, item.path, row, self.cfg.max_line_bytes, warn)
        except OSError as exc:
            self.unopenable[item.path] = exc.strerror or type(exc).__name__
            return None
        if tailed is None:  # the path leads elsewhere now: a stored row stays for recovery
            return None
        # Stored offsets apply once, at start: a later file with a reused inode starts at 0.
        self.stored.pop(item.key, None)
        self.add_file(tailed)
        return tailed

    def add_file(self, tailed: TailedFile) -> None:
        """Track an opened file."""
        self.files[tailed.key] = tailed
        stream = self.router.stream_for(tailed.path)
        self.batcher.track(tailed.key, tailed.src, tailed.offset, stream)
        log.info("tailing file", extra={"path": tailed.path, "offset": tailed.offset,
                                        "stream": stream})  # fmt: skip

    def recover(self, found: dict[FileKey, Found], dangling: dict[str, str]) -> None:
        """At start: drain what was rotated while stopped; forget rows of files that are gone.
        `dangling`: link target -> path of the matched links that lead to no file now."""
        drained, gone = recover_at_start(
            found,
            self.stored,
            self.files.keys(),
            self.last_scan,
            self.cfg.max_line_bytes,
            dangling=dangling,
        )
        for tailed in drained:
            self.add_file(tailed)
        self.db.delete(gone)
        self.stored.clear()

    def close_drained(self, now: float) -> None:
        """Close rotated/deleted files once quiet for the grace period and fully consumed."""
        for key, tailed in list(self.files.items()):
            if self.drain.can_close(tailed, now):
                self.batcher.flush_file(key)
                self.closed[key] = self.files.pop(key)  # descriptor closed once acknowledged
                self.metrics.files.set(len(self.files))
                log.info(
                    "drained file, waiting for its acknowledgements", extra={"path": tailed.path}
                )

    def give_up_deleted(self, now: float) -> None:
        """Bound the disk held by deleted files (--max-deleted-bytes, --max-deleted-files,
        shared evenly by the streams): a forwarder far behind keeps every rotated-and-deleted
        file open until read, and their space is freed only when it closes them. Above its
        stream's share, the oldest with unread lines are given up: what was read is shipped,
        the unread rest is counted and logged. Files read to their end only wait for their
        acknowledgements (or grace period): they count, and are never given up."""
        held: dict[str, tuple[list[tuple[TailedFile, int]], list[int]]] = {
            stream: ([], []) for stream in self.lanes
        }
        draining = [t for t in self.files.values() if t.draining_since is not None]
        for tailed in [*draining, *self.closed.values()]:
            size = tailed.deleted_size()
            if size < 0:
                continue
            reading, awaiting = held[self.batcher.streams[tailed.key]]
            if tailed.key in self.files and not tailed.finished(size):
                reading.append((tailed, size))
            else:
                awaiting.append(size)
        max_bytes, max_files = self.deleted_share()
        for stream, (reading, awaiting) in held.items():
            self.metrics.deleted_held.labels(stream).set(
                sum(size for _, size in reading) + sum(awaiting)
            )
            limits_ = (sum(awaiting), max_bytes, max_files - len(awaiting))
            for tailed in deleted_to_give_up(reading, *limits_):
                self.give_up(tailed, now)

    def deleted_share(self) -> tuple[int, int]:
        """Each stream's share of --max-deleted-bytes and --max-deleted-files (bytes, files):
        even, so a stream far behind cannot take the others' disk."""
        streams = len(self.lanes)
        return self.cfg.max_deleted_bytes // streams, max(1, self.cfg.max_deleted_files // streams)

    def give_up(self, tailed: TailedFile, now: float) -> None:
        """Stop reading a deleted file: ship what was read, count the unread rest, close it
        now (its disk space is freed; what was read is delivered from memory)."""
        self.ship_pieces(
            tailed, tailed.flush_stale(float("inf")), now, "before giving up its deleted file"
        )
        self.batcher.flush_file(tailed.key)
        unread = max(0, os.fstat(tailed.fd).st_size - tailed.offset)
        tailed.close()  # before it is counted: once counted, its disk space is free
        self.count_lost(
            tailed.key,
            tailed.path,
            unread,
            "gave up a deleted file not read to its end, to free the node's disk: its unread "
            "lines are lost (raise --max-deleted-bytes/--max-deleted-files, or make delivery "
            "keep up)",
            stream_max_deleted_bytes=self.deleted_share()[0],
        )
        # Its key (dev, inode) is free for a new file now: its records in flight wait under
        # a key of their own, and its row goes.
        real, self.given_up = tailed.key, self.given_up + 1
        self.batcher.rekey(real, (GIVEN_UP_DEV, self.given_up))
        self.closed[(GIVEN_UP_DEV, self.given_up)] = self.files.pop(real)  # until acknowledged
        self.saved.pop(real, None)
        self.db_call(self.db.delete, [real])
        self.metrics.files.set(len(self.files))

    # ----- reading

    def read_all(self, now: float) -> bool:
        """Read available lines, one chunk per file per round, while its lane's buffer
        share has room.

        Files take turns (round-robin, starting after the last file served), so a busy file
        cannot starve the others of the shared buffer; a full lane pauses its files only.
        """
        self.update_buffered()
        files = list(self.files.values())
        if not files:
            return False
        start = self.cursor % len(files)
        active = files[start:] + files[:start]
        progressed = False
        for _ in range(READS_PER_FILE):
            more = []
            for tailed in active:
                if self.stop.is_set():
                    return progressed
                if self.lane_of(tailed).has_room(self.cfg.read_size) and self.read_one(tailed, now):
                    progressed = True
                    more.append(tailed)
            active = more
            if not active:
                break
        self.cursor = start + 1
        return progressed

    def read_one(self, tailed: TailedFile, now: float, final: bool = False) -> bool:
        """Read one chunk of one file into the batcher; False when it had nothing complete.
        `final`: the file will not grow again (else decided by the drain policy)."""
        final = final or self.drain.is_final(tailed, now)
        chunk = tailed.read(self.cfg.read_size, final)
        self.after_truncation(tailed)
        if chunk is None:
            return False
        self.account(tailed, chunk)
        self.batcher.add(tailed.key, chunk, now)
        return True

    def flush_stale_partials(self, now: float) -> None:
        """Ship unfinished partial lines that waited longer than --partial-flush-timeout as
        they are, so one stream stopped mid-line never holds its file's offset (or memory)."""
        timeout = self.cfg.partial_flush_timeout
        for tailed in self.files.values():
            if tailed.size <= tailed.offset:
                self.ship_pieces(tailed, tailed.flush_stale(now - timeout), now, "after waiting")
            else:  # behind: unread bytes may hold the line's end, unless later lines were read
                chunk = tailed.flush_overtaken(timeout)
                self.ship_pieces(tailed, chunk, now, "overtaken by later lines")
        self.update_buffered()
        for lane in self.lanes.values():
            if lane.has_room(self.cfg.read_size) or self.tracker.unacked(lane.stream):
                continue
            # Reading is paused and nothing in flight could free room: what is held must go,
            # or the lane would wait for the flush tick (open records) or for ever (pieces).
            if self.batcher.held_bytes(lane.stream):
                self.batcher.flush_stream(lane.stream)
                continue
            for tailed in self.files.values():
                if self.lane_of(tailed) is lane:
                    chunk = tailed.flush_stale(float("inf"))
                    self.ship_pieces(tailed, chunk, now, "to free the buffer")

    def ship_pieces(self, tailed: TailedFile, chunk: Chunk | None, now: float, why: str) -> None:
        """Ship a chunk of the file's unfinished partial lines, as they are (counted, logged)."""
        if chunk is not None:
            self.metrics.stale_partials.inc(chunk.stale)
            log.warning(
                "unfinished partial line shipped as it is " + why,
                extra={"path": tailed.path, "lines": chunk.stale,
                       "seconds": self.cfg.partial_flush_timeout},
            )  # fmt: skip
            self.batcher.add(tailed.key, chunk, now)

    def after_truncation(self, tailed: TailedFile) -> None:
        """If the file was found truncated (copytruncate): count it, and restart its records
        and committed offset at 0, so no offset of the old content applies to the new."""
        truncations = tailed.take_truncations()
        if truncations:
            self.metrics.truncations.inc(truncations)
            self.batcher.restart_file(tailed.key)
            self.tracker.truncated(tailed.key)

    def account(self, tailed: TailedFile, chunk: Chunk) -> None:
        """Count what one read consumed."""
        self.lane_of(tailed).buffered += chunk.consumed
        self.metrics.bytes_read.inc(chunk.consumed)
        self.metrics.lines_read.inc(chunk.data.count(b"\n"))
        if chunk.oversize:
            self.metrics.oversize.inc(chunk.oversize)
            log.warning("oversize line", extra={"path": tailed.path})

    def lane_of(self, tailed: TailedFile) -> Lane:
        """The lane of the delivery stream the file's lines go to."""
        return self.lanes[self.batcher.streams[tailed.key]]

    def any_lane_full(self) -> bool:
        """Some lane has no room for a read (its files wait for acknowledgements)."""
        return not all(lane.has_room(self.cfg.read_size) for lane in self.lanes.values())

    def update_buffered(self) -> None:
        """Each lane's bytes of lines held in memory: in records in flight, in open records,
        and in unfinished partial lines. (Not file offsets: an offset held back by one
        runtime stream's unfinished line must not count what the other stream sent since.)"""
        pieces = dict.fromkeys(self.lanes, 0)
        for tailed in self.files.values():
            pieces[self.batcher.streams[tailed.key]] += tailed.held_bytes()
        for stream, lane in self.lanes.items():
            held = self.tracker.unacked_bytes(stream) + self.batcher.held_bytes(stream)
            lane.buffered = held + pieces[stream]
            self.metrics.buffered.labels(stream).set(lane.buffered)

    def watch_buffer(self, now: float) -> None:
        """Readiness fails while a lane's buffer share is full with nothing in flight
        (nothing that an acknowledgement could free) for longer than --max-delivery-lag."""
        for lane in self.lanes.values():
            stuck = not lane.has_room(self.cfg.read_size) and self.tracker.unacked(lane.stream) == 0
            if not stuck:
                lane.stuck_since = None
            elif lane.stuck_since is None:
                lane.stuck_since = now
        stuck_lanes = [lane for lane in self.lanes.values() if lane.stuck_since is not None]
        first = min(stuck_lanes, key=lambda lane: lane.stuck_since or 0.0, default=None)
        self.health.stuck(first.stuck_since if first else None, first.stream if first else "")

    def all_read(self) -> bool:
        """--exit-on-eof: rotated files closed, live files (and files whose link only went
        away: they may grow again) read to their last complete line."""
        return all(
            t.at_eof and (t.draining_since is None or t.in_place()) for t in self.files.values()
        )

    # ----- offsets and delivery state

    def commit(self) -> None:
        """Look for truncations, report the lag, save changed offsets, forget closed files
        once fully acknowledged, and report delivery progress to the health checks."""
        self.check_truncations()
        committed = self.tracker.snapshot()
        self.report_lag(committed)
        self.save_offsets(committed)
        self.forget_acknowledged(committed)
        self.report_delivery()

    def check_truncations(self) -> None:
        """Look at every open file for a truncation (deep: its first bytes too) and restart
        the records and offset of each one truncated."""
        for tailed in self.files.values():
            tailed.check_truncation(deep=True)
            self.after_truncation(tailed)

    def check_catch_up(self, now: float) -> None:
        """Compress at --zstd-catch-up-level while behind growing files with room to send
        (forwarder/catch_up.py); say it when switching either way."""
        if self.catch_up is None:
            return
        unread = sum(max(0, t.size - t.offset) for t in self.files.values())
        behind = self.catch_up.update(now, unread, room=not self.any_lane_full())
        encoder = self.batcher.encoder
        if behind == encoder.catching_up:
            return
        encoder.catching_up = behind
        self.metrics.zstd_level.set(encoder.level)
        if behind:
            self.metrics.catch_ups.inc()
        what = "behind growing files: compressing faster" if behind else "caught up"
        log.info(what, extra={"zstd_level": encoder.level, "unread_bytes": unread})

    def report_lag(self, committed: dict[FileKey, int]) -> None:
        """Bytes of the open files not acknowledged yet: in all (and per file with
        --metrics-file-labels)."""
        total_lag = 0
        for key, tailed in self.files.items():
            lag = max(0, tailed.size - committed.get(key, tailed.offset))
            total_lag += lag
            if self.cfg.metrics_file_labels:
                self.metrics.lag.labels(tailed.src).set(lag)
        self.metrics.lag_total.set(total_lag)

    def save_offsets(self, committed: dict[FileKey, int]) -> None:
        """Save the offsets that changed (and the last scan's time); a failed save (disk
        full, database locked) is counted, logged and tried again at the next commit."""
        rows = []
        for key, tailed in self.files.items():
            offset = committed.get(key, tailed.offset)
            if self.saved.get(key) != offset:
                rows.append((key, Stored(tailed.path, tailed.target, offset, tailed.fingerprint())))
        if self.db_call(self.db.save, rows, self.scanned):
            self.saved.update((key, row.offset) for key, row in rows)
            self.scanned = None

    def db_call(self, call: Callable[..., None], *args: Any) -> bool:
        """Run a database write; False (counted, logged once a minute) when it failed."""
        try:
            call(*args)
        except sqlite3.Error as exc:
            self.metrics.offset_save_failures.inc()
            if self.said.due("offsets") is not None:
                log.error("cannot save offsets; retrying", extra={"error": str(exc)})
            return False
        return True

    def forget_acknowledged(self, committed: dict[FileKey, int]) -> None:
        """Close drained files whose records are all acknowledged; delete their rows."""
        done = [k for k in self.closed if self.tracker.in_flight(k) == 0]
        for key in done:
            tailed = self.closed.pop(key)
            if tailed.fd >= 0:  # (a file given up is deleted: never found again)
                self.remember(key, tailed, committed.get(key, tailed.offset))
            tailed.close()
            self.tracker.forget(key)
            self.batcher.untrack(key)
            self.saved.pop(key, None)
            if tailed.src not in {t.src for t in self.files.values()}:
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(tailed.src)
        self.db_call(self.db.delete, done)  # a row left behind is pruned at the next start

    def report_delivery(self) -> None:
        """The oldest unacknowledged line (the lag gauge), and for /readyz the stream whose
        oldest record waits while its last acknowledgement is the longest ago."""
        waiting = []
        for stream in self.lanes:
            sent = self.tracker.oldest_unacked(stream)
            if sent is not None:
                waiting.append((self.tracker.last_ack_of(stream), sent, stream))
        last_ack, sent, stream = min(waiting, default=(self.tracker.last_ack, None, ""))
        oldest = (self.tracker.oldest_unacked(), self.batcher.oldest_open())
        read = min((t for t in oldest if t is not None), default=None)
        self.health.delivery(sent, read, last_ack, stream)

    def remember(self, key: FileKey, tailed: TailedFile, offset: int) -> None:
        """Keep a closed file's offset and fingerprint for a while (FORGOTTEN_FILES); not its
        paths: a file found again is found by its key."""
        self.forgotten[key] = Stored("", "", offset, tailed.fingerprint())
        while len(self.forgotten) > FORGOTTEN_FILES:
            self.forgotten.popitem(last=False)

    def wait_delivered(self, deadline: float | None) -> bool:
        """Wait for every acknowledgement until the monotonic `deadline` (None: until done,
        or signalled and then --shutdown-timeout more), saving offsets as acknowledgements
        come: a SIGKILL meanwhile re-sends only what was not acknowledged yet."""
        if deadline is None:
            while not self.tracker.wait_idle(COMMIT_INTERVAL):
                self.commit()
                if self.stop.is_set():
                    return self.wait_delivered(time.monotonic() + self.cfg.shutdown_timeout)
            return True
        while not self.tracker.wait_idle(min(COMMIT_INTERVAL, deadline - time.monotonic())):
            self.commit()
            if time.monotonic() >= deadline:
                return False
        return True

    def drain_on_stop(self, deadline: float) -> None:
        """Before stopping, read what is left of deleted files, then of renamed ones, until
        the monotonic `deadline`: no restart can find a deleted file again. A renamed
        file's unterminated last line stays for the restart, which finds it by its inode.
        Files take turns, and a file whose lane is full waits while the others are read
        (a stream that is down holds back only its own files). A file deleted since the last
        scan is one of them: its nlink says so."""
        for tailed in self.files.values():
            if tailed.draining_since is None and tailed.deleted():
                tailed.start_draining()
        draining = [t for t in self.files.values() if t.draining_since is not None]
        self.flush_queues()  # from now on every record goes out at once
        for group in (
            [t for t in draining if t.deleted()],
            [t for t in draining if not t.deleted()],
        ):
            self.read_by_turns(group, deadline)

    def read_by_turns(self, pending: list[TailedFile], deadline: float) -> None:
        """Read `pending` files to their end, one chunk each per turn, until `deadline`;
        offsets are saved as acknowledgements come."""
        next_commit = 0.0
        while pending and (now := time.monotonic()) < deadline:
            if now >= next_commit:
                self.commit()
                next_commit = now + COMMIT_INTERVAL
            self.update_buffered()
            waiting = []
            for tailed in pending:
                if tailed.finished():
                    continue
                if not self.lane_of(tailed).has_room(self.cfg.read_size):
                    waiting.append(tailed)  # its lane is full: its turn comes again
                elif self.read_one(tailed, time.monotonic(), final=tailed.deleted()):
                    waiting.append(tailed)
            if waiting and all(not self.lane_of(t).has_room(self.cfg.read_size) for t in waiting):
                self.batcher.flush_all()
                self.tracker.wait_ack(self.poll)
            pending = waiting

    def flush_queues(self) -> None:
        """From now on every lane sends what it has at once."""
        for lane in self.lanes.values():
            lane.queue.flush()

    def finish(self, wait: float | None) -> int:
        """Drain deleted and rotated files, flush open records, wait for acknowledgements
        (all within `wait` s from now, one deadline; None: drain for --shutdown-timeout, then
        wait until everything is acknowledged), save offsets."""
        started = time.monotonic()
        deadline = None if wait is None else started + wait
        self.drain_on_stop(started + (self.cfg.shutdown_timeout if wait is None else wait))
        for tailed in self.files.values():
            # Lines after an unfinished piece were shipped: keeping the piece for the next run
            # would keep the offset before them, and the next run would send them again.
            if tailed.joiner.shipped_past_pending():
                chunk = tailed.flush_stale(float("inf"))
                self.ship_pieces(tailed, chunk, time.monotonic(), "at shutdown")
        self.batcher.flush_all()
        self.flush_queues()
        delivered = self.wait_delivered(deadline)
        if not delivered:
            log.warning(
                "shutdown timeout: unacknowledged lines of files still on disk will be re-sent "
                "on restart"
            )
        self.report_deleted_left()
        self.hard_stop.set()
        for lane in self.lanes.values():
            lane.queue.close()
        self.commit()
        self.db.close()
        for tailed in self.files.values():
            self.report_unshipped(tailed)
            tailed.close()
        for tailed in self.closed.values():
            tailed.close()
        log.info("stopped", extra={"delivered": delivered, "records": self.batcher.records_made})
        return self.exit_code()

    def exit_code(self) -> int:
        """0; with --exit-on-eof, 1 when something matched could not be read, or nothing
        matched at all (said in one line)."""
        why = self.health.nothing_to_read
        if self.unreadable:
            why = "unreadable: " + ", ".join(
                f"{p} ({r})" for p, r in sorted(self.unreadable.items())
            )
        if not self.cfg.exit_on_eof or why is None:
            return 0
        log.error("exit 1: not everything could be read", extra={"reason": why})
        return 1

    def report_deleted_left(self) -> None:
        """At exit, lines of deleted files not acknowledged yet (a stream down or slow past
        --shutdown-timeout) are lost: no restart can read a deleted file. Each is counted as
        given up and said in an ERROR (its metrics may not be scraped before the exit)."""
        for key, tailed in [*self.files.items(), *self.closed.items()]:
            # A given-up file is closed: what was read of it is all that is left to lose.
            size = tailed.offset if key[0] == GIVEN_UP_DEV else tailed.deleted_size()
            lost = size - self.tracker.committed(key)
            if size < 0 or lost <= 0:
                continue
            self.count_lost(
                key,
                tailed.path,
                lost,
                "stopped before a deleted file's lines were delivered: they are lost (no "
                "restart can read a deleted file; give the stream time, or raise "
                "--shutdown-timeout and the pod's terminationGracePeriodSeconds)",
            )

    def count_lost(self, key: FileKey, path: str, lost: int, why: str, **extra: int) -> None:
        """Count the deleted file `key` (as the batcher knows it) given up with `lost` bytes,
        by its stream, and say `why` in an ERROR naming `path`."""
        stream = self.batcher.streams[key]
        self.metrics.deleted_given_up.labels(stream).inc()
        self.metrics.deleted_bytes_given_up.labels(stream).inc(lost)
        log.error(why, extra={"path": path, "stream": stream, "lost_bytes": lost, **extra})

    def report_unshipped(self, tailed: TailedFile) -> None:
        """Say how many bytes after the last complete line stay for the next run."""
        left = tailed.unshipped()
        if left:
            log.info(
                "incomplete last line left unshipped; its offset is kept before it",
                extra={"path": tailed.path, "bytes": left},
            )
